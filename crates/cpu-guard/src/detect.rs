//! Reading the host CPU: raw `CPUID`/`XGETBV` on x86_64, `getauxval(AT_HWCAP/AT_HWCAP2)` on aarch64
//! Linux. Returns a bit mask over the architecture's table in `features.rs`. `no_std` and
//! panic-free; compiled only into the baseline guard object. It does NOT decide anything.

use super::features;

/// CPUID leaf/sub-leaf → (eax, ebx, ecx, edx).
#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    // CPUID exists on every x86_64 CPU.
    #[allow(unused_unsafe)]
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, sub) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// XGETBV with ECX = 0 (XCR0). The caller checks OSXSAVE first.
#[cfg(target_arch = "x86_64")]
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called when CPUID.1:ECX.OSXSAVE is set, so XGETBV(0) is defined.
    unsafe {
        core::arch::asm!(
            "xgetbv",
            in("ecx") 0u32,
            out("eax") lo,
            out("edx") hi,
            options(nomem, nostack, preserves_flags)
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Bit mask (over `features::X86`) of what this CPU and OS support.
#[cfg(target_arch = "x86_64")]
pub fn host_mask() -> u64 {
    use features::X86Reg;
    let max_leaf = cpuid(0, 0).0;
    let (_, _, l1_ecx, l1_edx) = cpuid(1, 0);
    let (l7_eax, l7_ebx, l7_ecx, l7_edx) = if max_leaf >= 7 {
        cpuid(7, 0)
    } else {
        (0, 0, 0, 0)
    };
    let l7s1_eax = if max_leaf >= 7 && l7_eax >= 1 {
        cpuid(7, 1).0
    } else {
        0
    };
    let max_ext = cpuid(0x8000_0000, 0).0;
    let e1_ecx = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001, 0).2
    } else {
        0
    };
    // XCR0 says which register states the OS saves; only readable when OSXSAVE (leaf 1 ECX 27).
    let xcr0 = if l1_ecx & (1 << 27) != 0 {
        xgetbv0()
    } else {
        0
    };
    let mut mask = 0u64;
    for (i, f) in features::X86.iter().enumerate() {
        let reg = match f.reg {
            X86Reg::L1Ecx => l1_ecx,
            X86Reg::L1Edx => l1_edx,
            X86Reg::L7Ebx => l7_ebx,
            X86Reg::L7Ecx => l7_ecx,
            X86Reg::L7Edx => l7_edx,
            X86Reg::L7s1Eax => l7s1_eax,
            X86Reg::E1Ecx => e1_ecx,
        };
        if reg & 1u32.checked_shl(f.bit).unwrap_or(0) != 0 && xcr0 & f.xcr0 == f.xcr0 {
            mask |= 1u64.checked_shl(i as u32).unwrap_or(0);
        }
    }
    mask
}

/// Bit mask (over `features::AARCH64`) of what this CPU supports, from the auxiliary vector.
#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
pub fn host_mask() -> u64 {
    use features::HwcapWord;
    unsafe extern "C" {
        fn getauxval(kind: core::ffi::c_ulong) -> core::ffi::c_ulong;
    }
    const AT_HWCAP: core::ffi::c_ulong = 16;
    const AT_HWCAP2: core::ffi::c_ulong = 26;
    // SAFETY: getauxval is provided by every Linux libc (musl and glibc); no preconditions.
    let (hwcap, hwcap2) = unsafe { (getauxval(AT_HWCAP), getauxval(AT_HWCAP2)) };
    let mut mask = 0u64;
    for (i, f) in features::AARCH64.iter().enumerate() {
        let word = match f.word {
            HwcapWord::Hwcap => hwcap,
            HwcapWord::Hwcap2 => hwcap2,
        };
        if word & (1 as core::ffi::c_ulong).checked_shl(f.bit).unwrap_or(0) != 0 {
            mask |= 1u64.checked_shl(i as u32).unwrap_or(0);
        }
    }
    mask
}

/// Elsewhere nothing can be checked: report everything as present.
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_os = "linux")
)))]
pub fn host_mask() -> u64 {
    u64::MAX
}
