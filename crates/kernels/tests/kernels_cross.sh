#!/usr/bin/env bash
# Runs the kernel tests (crates/kernels/tests/kernels.rs) on CPUs this machine is not, under qemu-user:
#   aarch64 `max`         → variants i8mm, dotprod, neon, scalar
#   aarch64 `neoverse-n1` → dotprod, neon, scalar (dot product without i8mm)
#   aarch64 `cortex-a72`  → neon, scalar (no dot-product extension)
#   x86-64  `Haswell-v4` → v3, v2, scalar (AVX2 without AVX-VNNI/AVX-512)
#   x86-64  `Nehalem-v2` → v2, scalar (SSE4.2, no AVX)
# and the attention's unit test (its NEON code body) under aarch64 `max` (the host runs its x86
# bodies itself). On a host without AVX-512 VNNI, the x86-64 binaries (kernel tests, and the
# attention and quantizer unit tests with their AVX-512 bodies) also run on an emulated Tiger
# Lake under Bochs (`tests/bochs/run.sh`; qemu-user has no AVX-512) → v4, v3, v2, scalar.
# BITNET_EXPECT_KERNELS makes each run fail if the emulated CPU exposes a different set, so
# coverage cannot shrink silently. Needs: qemu-user-static (Debian package), rustup target
# aarch64-unknown-linux-musl; links with rust-lld (shipped with rustup), no cross gcc; for
# Bochs, the Debian packages tests/bochs/run.sh lists and a Debian kernel package it downloads.
# Runtime on a 2-core machine: ~1–10 min to build (mostly the aarch64 dependency build, once),
# a few seconds per qemu run, ~8 min for the Bochs run (2.5 of them booting).
set -euo pipefail
cd "$(dirname "$0")/.."   # crates/kernels/, so proptest finds its sources for failure persistence

test_binary() { # $@: extra cargo args; prints the path of the built kernels test binary
    cargo test --locked -p bitnet-kernels --test kernels --no-run "$@" 2>&1 \
        | sed -n 's/.*Executable tests\/kernels.rs (\(.*\))/\1/p' | tail -n 1
}

lib_test_binary() { # $1 package, then extra cargo args; prints the path of its unit-test binary
    local package=$1
    shift
    cargo test --locked -p "$package" --lib --no-run "$@" 2>&1 \
        | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | tail -n 1
}

abs() { # $1 binary (absolute, or relative to the workspace): prints its absolute path
    case "$1" in /*) echo "$1" ;; *) echo "$root/$1" ;; esac
}

run() { # $1 qemu, $2 cpu, $3 expected variants, $4 binary (absolute, or relative to the workspace)
    bin=$(abs "$4")
    echo "== $1 -cpu $2 (expect $3)"
    # qemu-x86_64 warns once per thread about CPUID bits TCG lacks (pcid, x2apic, …): noise.
    BITNET_EXPECT_KERNELS="$3" "$1" -cpu "$2" "$bin" -q 2>&1 \
        | grep -v -e "TCG doesn't support requested feature" -e '^proptest: FileFailurePersistence'
}

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld
arm=$(test_binary --target aarch64-unknown-linux-musl)
[ -n "$arm" ] || { echo "kernels_cross: building the aarch64 test binary failed" >&2; exit 1; }
arm_model=$(lib_test_binary bitnet-model --target aarch64-unknown-linux-musl)
[ -n "$arm_model" ] || { echo "kernels_cross: building the aarch64 unit tests failed" >&2; exit 1; }
x86=$(test_binary)
[ -n "$x86" ] || { echo "kernels_cross: building the x86-64 test binary failed" >&2; exit 1; }
x86_kernels=$(lib_test_binary bitnet-kernels)
x86_model=$(lib_test_binary bitnet-model)
[ -n "$x86_kernels" ] && [ -n "$x86_model" ] \
    || { echo "kernels_cross: building the x86-64 unit tests failed" >&2; exit 1; }

root=$(cd ../.. && pwd)
run qemu-aarch64-static max i8mm,dotprod,neon,scalar "$arm"
run qemu-aarch64-static neoverse-n1 dotprod,neon,scalar "$arm"
run qemu-aarch64-static cortex-a72 neon,scalar "$arm"
echo "== qemu-aarch64-static -cpu max: attention (NEON body)"
qemu-aarch64-static -cpu max "$(abs "$arm_model")" -q attention
run qemu-x86_64-static Haswell-v4 v3,v2,scalar "$x86"
run qemu-x86_64-static Nehalem-v2 v2,scalar "$x86"
if grep -qw avx512_vnni /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
    echo "== Bochs tigerlake skipped: this CPU runs the v4 kernels itself"
else
    echo "== bochs -cpu tigerlake (expect v4,v3,v2,scalar): kernel tests, attention and quantizer"
    bash tests/bochs/run.sh --cpu tigerlake --env BITNET_EXPECT_KERNELS=v4,v3,v2,scalar --timeout 2400 \
        -- "$(abs "$x86")" -q --then "$(abs "$x86_model")" -q attention \
        --then "$(abs "$x86_kernels")" -q
fi
echo "kernels_cross: all emulated runs passed"
