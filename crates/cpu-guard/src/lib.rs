//! CPU guard: refuses to run a tier build on a CPU below its tier. A binary built for a CPU tier
//! (`-C target-cpu=x86-64-v3` and so on) checks that the host CPU and OS support every feature the
//! tier requires; if not, it prints which features are missing and which image tag to use instead,
//! then exits with [`EXIT_CPU_UNSUPPORTED`] (78) — instead of dying later with SIGILL.
//!
//! How it stays safe on a CPU that lacks the tier's features:
//! - The check is compiled separately, for the target's *baseline* CPU: `build.rs` builds
//!   `src/baseline.rs` (+ `detect.rs`, `report.rs`) into an object with `$RUSTC
//!   -C target-cpu=x86-64|generic` and links it in. Code compiled with the tier's flags may use
//!   AVX2/BMI/AVX-512 anywhere, even for plain integer logic (a v3 build used BMI1 `andn` in an
//!   earlier, in-crate guard), so the guard must not be compiled with them.
//! - It runs from `.init_array`, before `main` and before any Rust code of the binary; `main` also
//!   calls [`enforce`] first thing (a cheap re-check) so the contract is visible in `main.rs`.
//! - The tier is known at compile time: `build.rs` bakes the `BITNET_TIER*` environment set by
//!   `cargo xtask build-images` (plus every feature the compiler may use, from
//!   `CARGO_CFG_TARGET_FEATURE`) into bit masks over `src/features.rs`.
//! - Detection uses raw `CPUID` + `XGETBV` (x86_64) or `getauxval(AT_HWCAP/AT_HWCAP2)` (aarch64).
//!   `is_x86_feature_detected!` is NOT used: it is constant-folded to `true` for every feature the
//!   build enables, which is exactly what cannot be trusted here.
//!
//! Proof: `xtask/tests/images.rs` runs the v3 binary under `qemu-x86_64-static -cpu Nehalem` and the
//! v4 binary under `-cpu Haswell`: the message and exit 78, no SIGILL.
//!
//! Exit status 78 (`EX_CONFIG` in sysexits.h: the image does not fit this host) is reserved for
//! this; nothing else in the server may use it.
//!
//! What this crate does NOT do: choose kernels (run-time dispatch upward from the tier floor lives
//! with the kernels), or check anything for builds whose tier needs only the baseline.

// Data shared with build.rs and the guard object; not every field is read on the Rust side.
#[allow(dead_code)]
mod features;
// The tier tables and the report are the guard object's (`src/baseline.rs`); the library
// compiles them only to test them.
#[cfg(test)]
mod report;
#[cfg(test)]
mod tier;

/// Exit status when the CPU lacks a feature the build requires (sysexits `EX_CONFIG`).
pub const EXIT_CPU_UNSUPPORTED: i32 = 78;

unsafe extern "C" {
    /// In the baseline guard object (`src/baseline.rs`).
    fn bitnet_cpu_guard_enforce();
    /// In the baseline guard object (`src/baseline.rs`).
    fn bitnet_cpu_guard_host_mask() -> u64;
}

/// Check the CPU against this build's tier; on a mismatch print the report to stderr and exit with
/// [`EXIT_CPU_UNSUPPORTED`]. Call it as the first statement of `main`.
#[inline(never)]
pub fn enforce() {
    // SAFETY: plain C-ABI function without arguments or preconditions.
    unsafe { bitnet_cpu_guard_enforce() }
}

fn host_mask() -> u64 {
    // SAFETY: plain C-ABI function without arguments or preconditions.
    unsafe { bitnet_cpu_guard_host_mask() }
}

/// A feature name the guard does not know for this architecture.
#[derive(Debug, thiserror::Error)]
#[error("unknown CPU feature `{name}` for this architecture; known: {known}")]
pub struct UnknownFeature {
    /// The name asked for.
    pub name: String,
    /// Comma-separated list of the known names.
    pub known: String,
}

/// The feature names the guard knows for a target architecture (`x86_64`, `aarch64`; rustc
/// spelling), in table order. Tools validate tier profiles with it.
pub fn known_features(target_arch: &str) -> &'static [&'static str] {
    features::names_for_arch(target_arch)
}

/// Which of `names` (rustc target-feature names) the host CPU and OS lack. For tools: xtask picks
/// the host's best tier with it. On architectures without a table nothing is reported missing.
pub fn missing_on_host<'a>(names: &[&'a str]) -> Result<Vec<&'a str>, UnknownFeature> {
    let table = features::names();
    if table.is_empty() {
        return Ok(Vec::new());
    }
    let host = host_mask();
    let mut missing = Vec::new();
    for name in names {
        let Some(i) = table.iter().position(|n| n == name) else {
            return Err(UnknownFeature {
                name: name.to_string(),
                known: table.join(", "),
            });
        };
        if host & (1 << i) == 0 {
            missing.push(*name);
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::report::{Buf, fallback, render};
    use super::tier::{BuildTier, Rung};
    use super::*;

    include!(concat!(env!("OUT_DIR"), "/cpu_tier.rs"));

    /// The tier this test binary was built for.
    fn build_tier() -> &'static BuildTier {
        &BUILD_TIER
    }

    /// Names of the features in `mask`, in table order (for this machine's architecture).
    fn feature_names(mask: u64) -> Vec<&'static str> {
        features::names()
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    fn mask_of(names: &[&str]) -> u64 {
        let table = features::names();
        names.iter().fold(0, |m, n| {
            m | 1 << table.iter().position(|t| t == n).unwrap()
        })
    }

    #[cfg(target_arch = "x86_64")]
    fn rendered(tier: &BuildTier, host: u64) -> String {
        let mut bytes = [0u8; 2048];
        let mut buf = Buf::new(&mut bytes);
        render(
            &mut buf,
            features::names(),
            tier,
            tier.required & !host,
            host,
        );
        let n = buf.written();
        String::from_utf8(bytes[..n].to_vec()).unwrap()
    }

    #[test]
    fn tables_fit_in_a_u64_mask_and_names_are_unique() {
        for names in [
            features::names_for_arch("x86_64"),
            features::names_for_arch("aarch64"),
        ] {
            assert!(names.len() <= 64);
            let mut sorted = names.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                names.len(),
                "duplicate feature name in {names:?}"
            );
        }
    }

    #[test]
    fn unknown_feature_is_an_error_naming_it() {
        let err = missing_on_host(&["warp-drive"]).unwrap_err();
        assert!(err.to_string().contains("`warp-drive`"), "{err}");
    }

    /// The guard object's raw CPUID/XGETBV reading must agree with std's detection (this test binary
    /// is built for the baseline, so `is_x86_feature_detected!` really asks the CPU here).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpuid_table_agrees_with_std_detect() {
        macro_rules! check {
            ($($f:tt),*) => {{
                let mut checked = 0;
                $(
                    let ours = missing_on_host(&[$f]).unwrap().is_empty();
                    assert_eq!(ours, std::arch::is_x86_feature_detected!($f), "feature {}", $f);
                    checked += 1;
                )*
                checked
            }};
        }
        let n = check!(
            "sse",
            "sse2",
            "fxsr",
            "sse3",
            "pclmulqdq",
            "ssse3",
            "fma",
            "cmpxchg16b",
            "sse4.1",
            "sse4.2",
            "movbe",
            "popcnt",
            "aes",
            "xsave",
            "avx",
            "f16c",
            "rdrand",
            "bmi1",
            "avx2",
            "bmi2",
            "avx512f",
            "avx512dq",
            "rdseed",
            "adx",
            "avx512ifma",
            "avx512cd",
            "sha",
            "avx512bw",
            "avx512vl",
            "avx512vbmi",
            "avx512vbmi2",
            "gfni",
            "vaes",
            "vpclmulqdq",
            "avx512vnni",
            "avx512bitalg",
            "avx512vpopcntdq",
            "avxvnni",
            "avx512bf16",
            "lzcnt"
        );
        // Every table entry except lahfsahf (std has no detection name for it) is covered.
        assert_eq!(n, features::X86.len() - 1);
    }

    #[test]
    fn fallback_picks_the_best_rung_the_host_has() {
        static LADDER: [Rung; 2] = [
            Rung {
                name: "hi",
                suffix: "x-hi",
                required: 0b111,
            },
            Rung {
                name: "lo",
                suffix: "x-lo",
                required: 0b001,
            },
        ];
        assert_eq!(fallback(&LADDER, "", 0b111).unwrap().name, "hi");
        assert_eq!(fallback(&LADDER, "", 0b011).unwrap().name, "lo");
        assert!(fallback(&LADDER, "", 0b010).is_none());
        // Never recommends the failing tier itself.
        assert_eq!(fallback(&LADDER, "x-hi", 0b111).unwrap().name, "lo");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn report_names_missing_features_and_the_tag_to_use() {
        let v3 = mask_of(&["sse4.2", "avx", "avx2"]);
        let v2 = mask_of(&["sse4.2"]);
        let ladder: &'static [Rung] = Box::leak(Box::new([
            Rung {
                name: "x86-64-v3",
                suffix: "amd64-v3",
                required: v3,
            },
            Rung {
                name: "x86-64-v2",
                suffix: "amd64-v2",
                required: v2,
            },
        ]));
        let tier = BuildTier {
            name: "x86-64-v3",
            suffix: "amd64-v3",
            image: "bitnet-server:0.1.0",
            declared: v3,
            required: v3,
            ladder,
        };
        let text = rendered(&tier, mask_of(&["sse", "sse2", "sse4.2"]));
        assert!(
            text.contains("cannot run the x86-64-v3 build (image bitnet-server:0.1.0-amd64-v3)")
        );
        assert!(text.contains("missing CPU features: avx avx2\n"), "{text}");
        assert!(text.contains("use the image bitnet-server:0.1.0-amd64-v2 (x86-64-v2 build)"));
        assert!(text.contains("status 78"), "{text}");

        let text = rendered(&tier, 0);
        assert!(
            text.contains("missing CPU features: sse4.2 avx avx2\n"),
            "{text}"
        );
        assert!(
            text.contains("none of the published tiers (x86-64-v3, x86-64-v2)"),
            "{text}"
        );
    }

    #[test]
    fn report_is_truncated_not_overflowing_on_a_tiny_buffer() {
        let tier = BuildTier {
            name: "t",
            suffix: "",
            image: "",
            declared: 0,
            required: u64::MAX,
            ladder: &[],
        };
        let mut bytes = [0u8; 16];
        let mut buf = Buf::new(&mut bytes);
        render(&mut buf, features::names(), &tier, u64::MAX, 0);
        assert_eq!(buf.written(), 16);
        assert_eq!(&bytes, b"bitnet-server: t");
    }

    #[test]
    fn build_without_xtask_still_requires_what_the_compiler_may_use() {
        let tier = build_tier();
        if tier.name == "unlabelled" {
            assert_eq!(tier.declared, 0);
            assert!(tier.ladder.is_empty());
        }
        #[cfg(target_arch = "x86_64")]
        assert!(feature_names(tier.required).contains(&"sse2"));
        #[cfg(target_arch = "aarch64")]
        assert!(feature_names(tier.required).contains(&"neon"));
        // The machine running the tests can run the test binary.
        assert_eq!(tier.required & !host_mask(), 0);
    }
}
