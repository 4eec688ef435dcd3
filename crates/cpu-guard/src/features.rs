//! The table of CPU features the guard knows how to detect, for x86_64 (CPUID/XGETBV) and
//! aarch64 (HWCAP/HWCAP2 from the ELF auxiliary vector).
//!
//! Plain data, shared by the library and by `crates/cpu-guard/build.rs` (which includes this file with
//! `#[path]`): the build script maps the tier's feature names to bit positions in this table and
//! bakes the result into the binary, so the guard never parses strings at run time.
//! Names are rustc `target_feature` names (as in `CARGO_CFG_TARGET_FEATURE` and `profiles/*.toml`).
//! This file does NOT read the CPU; `cpu_guard` does.

/// Which CPUID output register (after the leaf/sub-leaf named in the variant) holds the bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum X86Reg {
    /// CPUID leaf 1, ECX.
    L1Ecx,
    /// CPUID leaf 1, EDX.
    L1Edx,
    /// CPUID leaf 7 sub-leaf 0, EBX.
    L7Ebx,
    /// CPUID leaf 7 sub-leaf 0, ECX.
    L7Ecx,
    /// CPUID leaf 7 sub-leaf 0, EDX.
    L7Edx,
    /// CPUID leaf 7 sub-leaf 1, EAX.
    L7s1Eax,
    /// CPUID leaf 0x8000_0001, ECX.
    E1Ecx,
}

/// One detectable x86_64 feature.
#[derive(Clone, Copy, Debug)]
pub struct X86Feature {
    /// rustc target-feature name.
    pub name: &'static str,
    /// Register holding the CPUID bit.
    pub reg: X86Reg,
    /// Bit index in that register.
    pub bit: u32,
    /// XCR0 bits the OS must have enabled (via XSETBV) for the feature to be usable; 0 if none.
    pub xcr0: u64,
}

/// XCR0 bits 1 (SSE state) and 2 (AVX/YMM upper halves).
pub const XCR0_YMM: u64 = 0b110;
/// XCR0 bits 1, 2 plus 5, 6, 7 (AVX-512 opmask, ZMM_Hi256, Hi16_ZMM).
pub const XCR0_ZMM: u64 = 0b1110_0110;

const fn x(name: &'static str, reg: X86Reg, bit: u32, xcr0: u64) -> X86Feature {
    X86Feature {
        name,
        reg,
        bit,
        xcr0,
    }
}

/// x86_64 features, each with its CPUID location (Intel SDM vol. 2A, CPUID; AMD APM vol. 3).
/// At most 64 entries: masks over this table are `u64`.
pub const X86: &[X86Feature] = {
    use X86Reg::*;
    &[
        x("sse", L1Edx, 25, 0),
        x("sse2", L1Edx, 26, 0),
        x("fxsr", L1Edx, 24, 0),
        x("sse3", L1Ecx, 0, 0),
        x("pclmulqdq", L1Ecx, 1, 0),
        x("ssse3", L1Ecx, 9, 0),
        x("fma", L1Ecx, 12, XCR0_YMM),
        x("cmpxchg16b", L1Ecx, 13, 0),
        x("sse4.1", L1Ecx, 19, 0),
        x("sse4.2", L1Ecx, 20, 0),
        x("movbe", L1Ecx, 22, 0),
        x("popcnt", L1Ecx, 23, 0),
        x("aes", L1Ecx, 25, 0),
        x("xsave", L1Ecx, 26, 0),
        x("avx", L1Ecx, 28, XCR0_YMM),
        x("f16c", L1Ecx, 29, XCR0_YMM),
        x("rdrand", L1Ecx, 30, 0),
        x("bmi1", L7Ebx, 3, 0),
        x("avx2", L7Ebx, 5, XCR0_YMM),
        x("bmi2", L7Ebx, 8, 0),
        x("avx512f", L7Ebx, 16, XCR0_ZMM),
        x("avx512dq", L7Ebx, 17, XCR0_ZMM),
        x("rdseed", L7Ebx, 18, 0),
        x("adx", L7Ebx, 19, 0),
        x("avx512ifma", L7Ebx, 21, XCR0_ZMM),
        x("avx512cd", L7Ebx, 28, XCR0_ZMM),
        x("sha", L7Ebx, 29, 0),
        x("avx512bw", L7Ebx, 30, XCR0_ZMM),
        x("avx512vl", L7Ebx, 31, XCR0_ZMM),
        x("avx512vbmi", L7Ecx, 1, XCR0_ZMM),
        x("avx512vbmi2", L7Ecx, 6, XCR0_ZMM),
        x("gfni", L7Ecx, 8, 0),
        x("vaes", L7Ecx, 9, XCR0_YMM),
        x("vpclmulqdq", L7Ecx, 10, XCR0_YMM),
        x("avx512vnni", L7Ecx, 11, XCR0_ZMM),
        x("avx512bitalg", L7Ecx, 12, XCR0_ZMM),
        x("avx512vpopcntdq", L7Ecx, 14, XCR0_ZMM),
        x("avxvnni", L7s1Eax, 4, XCR0_YMM),
        x("avx512bf16", L7s1Eax, 5, XCR0_ZMM),
        x("lahfsahf", E1Ecx, 0, 0),
        x("lzcnt", E1Ecx, 5, 0),
    ]
};

/// Which auxiliary-vector word holds the bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwcapWord {
    /// `getauxval(AT_HWCAP)`.
    Hwcap,
    /// `getauxval(AT_HWCAP2)`.
    Hwcap2,
}

/// One detectable aarch64 feature (Linux `arch/arm64/include/uapi/asm/hwcap.h`).
#[derive(Clone, Copy, Debug)]
pub struct ArmFeature {
    /// rustc target-feature name.
    pub name: &'static str,
    /// Auxiliary-vector word.
    pub word: HwcapWord,
    /// Bit index in that word.
    pub bit: u32,
}

const fn a(name: &'static str, word: HwcapWord, bit: u32) -> ArmFeature {
    ArmFeature { name, word, bit }
}

/// aarch64 features. At most 64 entries.
pub const AARCH64: &[ArmFeature] = {
    use HwcapWord::*;
    &[
        a("neon", Hwcap, 1),
        a("aes", Hwcap, 3),
        a("sha2", Hwcap, 6),
        a("crc", Hwcap, 7),
        a("lse", Hwcap, 8),
        a("fp16", Hwcap, 9),
        a("rdm", Hwcap, 12),
        a("rcpc", Hwcap, 15),
        a("dotprod", Hwcap, 20),
        a("sve", Hwcap, 22),
        a("sve2", Hwcap2, 1),
        a("i8mm", Hwcap2, 13),
        a("bf16", Hwcap2, 14),
    ]
};

const fn x86_names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = X86[i].name;
        i += 1;
    }
    out
}

const fn arm_names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = AARCH64[i].name;
        i += 1;
    }
    out
}

/// Names of [`X86`], in table order.
pub const X86_NAMES: [&str; X86.len()] = x86_names();
/// Names of [`AARCH64`], in table order.
pub const AARCH64_NAMES: [&str; AARCH64.len()] = arm_names();

/// The feature names known for a target architecture (`CARGO_CFG_TARGET_ARCH` spelling), in
/// table order; empty for architectures the guard does not cover.
pub fn names_for_arch(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &X86_NAMES,
        "aarch64" => &AARCH64_NAMES,
        _ => &[],
    }
}

/// The feature names of the architecture this code is compiled for (empty where the guard has no
/// table). Not meaningful inside `build.rs`, which runs on the build host.
pub fn names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &X86_NAMES
    } else if cfg!(target_arch = "aarch64") {
        &AARCH64_NAMES
    } else {
        &[]
    }
}
