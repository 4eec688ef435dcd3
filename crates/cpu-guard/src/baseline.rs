//! Crate root of the guard *object*: `crates/cpu-guard/build.rs` compiles this file with `rustc --emit obj`
//! for the target's **baseline** CPU (`-C target-cpu=x86-64` / `generic`), whatever the tier's
//! flags are, and links it into every binary. So the code that checks for AVX2/BMI/AVX-512 can
//! never itself contain them (a v3-compiled guard used BMI1 `andn` and died under
//! `qemu -cpu Nehalem` — that is why this object exists).
//!
//! Rules for everything compiled in here: `no_std`, no allocation, and no path that can reach
//! core's panic machinery (if one slips in, the binary fails to link instead of misbehaving).
//!
//! It exports `bitnet_cpu_guard_enforce` (check, report on fd 2, `_exit(78)`) and
//! `bitnet_cpu_guard_host_mask`, and registers `enforce` in `.init_array` so it runs before
//! `main` and before any Rust code of the binary.

#![no_std]
#![allow(dead_code)]

#[path = "detect.rs"]
mod detect;
#[path = "features.rs"]
mod features;
#[path = "report.rs"]
mod report;
#[path = "tier.rs"]
mod tier;

use tier::{BuildTier, Rung};

include!(concat!(env!("OUT_DIR"), "/cpu_tier.rs"));

unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn _exit(status: i32) -> !;
}

/// Host feature mask over this architecture's table.
#[unsafe(no_mangle)]
pub extern "C" fn bitnet_cpu_guard_host_mask() -> u64 {
    detect::host_mask()
}

/// Check the host against the tier; on a mismatch write the report to stderr and `_exit(78)`.
#[unsafe(no_mangle)]
pub extern "C" fn bitnet_cpu_guard_enforce() {
    let host = detect::host_mask();
    let missing = BUILD_TIER.required & !host;
    if missing == 0 {
        return;
    }
    let mut bytes = [0u8; 2048];
    let mut buf = report::Buf::new(&mut bytes);
    report::render(&mut buf, features::names(), &BUILD_TIER, missing, host);
    let len = buf.written();
    let mut done = 0;
    while done < len {
        let rest = bytes.get(done..len).unwrap_or(&[]);
        // SAFETY: `rest` is a valid initialised slice for the duration of the call.
        let n = unsafe { write(2, rest.as_ptr(), rest.len()) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    // SAFETY: terminates the process; nothing of ours needs cleaning up.
    unsafe { _exit(78) }
}

extern "C" fn guard_constructor() {
    bitnet_cpu_guard_enforce();
}

/// Run the guard from the C runtime's constructor list, before `main` and Rust's start-up.
#[used]
#[unsafe(link_section = ".init_array")]
static GUARD_CONSTRUCTOR: extern "C" fn() = guard_constructor;
