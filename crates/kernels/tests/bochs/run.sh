#!/usr/bin/env bash
# Runs x86-64 Linux programs on an emulated CPU that this machine is not — by default an Intel
# Tiger Lake with AVX-512 F/BW/VL + VNNI — by booting a Debian kernel under Bochs (full-system
# emulation; qemu-user's TCG has no AVX-512). kernels_cross.sh uses it to prove the `v4` kernels
# on hosts without AVX-512.
#
# Usage:
#   run.sh [options] -- PROG [ARGS...] [--then PROG [ARGS...]]...
# The programs run one after another in one boot; the first failure stops the rest.
# Options:
#   --cpu MODEL       Bochs CPU model (default: tigerlake; `bochs-bin -help cpu` lists them)
#   --env NAME=VALUE  environment variable for every program (repeatable); they also get
#                     PATH=/bin HOME=/tmp TMPDIR=/tmp
#   --timeout SECS    wall-clock limit for the whole emulation (default: 3600)
#   --megs N          guest memory in MiB (default: 2048)
#   --keep            keep the work dir (ISO, Bochs config and log, serial captures)
#   --verbose         stream the guest kernel's console to stderr
# Programs may be static or dynamically linked: the interpreter and the libraries `ldd` lists
# are copied into the guest at the same paths. Their debug info is stripped from the copies.
# Output: the programs' stdout and stderr (merged) on stdout; "[bochs]" notes on stderr (the
# guest CPU's AVX-512 flags, boot and run times).
# Exit status: the first failing program's (128+N if killed by signal N), 0 if all passed;
# 124 on timeout; 125 if the emulator or the guest failed before reporting a status.
#
# Needs the Debian packages bochs bochsbios vgabios bochs-term isolinux syslinux-common xorriso
# cpio gcc libc6-dev (installed here when missing and running as root) and a Debian kernel
# package (linux-image-*-amd64), fetched with `apt-get download` and unpacked (not installed)
# into the cache: $BOCHS_CACHE, default target/bochs of this workspace.
# Wall time on a 2-core Zen 3: ~160 s to boot (mostly the kernel decompressing itself), then
# the programs at roughly 1/80 of native speed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${BOCHS_CACHE:-$(cd "$here/../../../../.." && pwd)/target/bochs}
cpu=tigerlake timeout_s=3600 megs=2048 keep=0 verbose=0
envs=()

note() { echo "[bochs] $*" >&2; }
die() { echo "[bochs] error: $*" >&2; exit 125; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpu=$2; shift 2 ;;
        --env) [[ "$2" == *=* ]] || die "--env wants NAME=VALUE, got '$2'"; envs+=("$2"); shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --megs) megs=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --verbose) verbose=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ $# -ge 1 ] || die "no program given (see --help)"

# ---- dependencies ---------------------------------------------------------------------------
need=()
[ -x /usr/bin/bochs-bin ] || need+=(bochs)
[ -f /usr/share/bochs/BIOS-bochs-latest ] || need+=(bochsbios)
[ -f /usr/share/vgabios/vgabios.bin ] || need+=(vgabios)
[ -f /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so ] || need+=(bochs-term)
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || need+=(isolinux)
[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need+=(syslinux-common)
command -v xorriso >/dev/null || need+=(xorriso)
command -v cpio >/dev/null || need+=(cpio)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing Debian packages: ${need[*]} (sudo apt-get install ${need[*]})"
    note "installing Debian packages: ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${need[@]}"; } >&2 || die "apt-get install failed"
fi

mkdir -p "$cache"
kernel=$(ls "$cache"/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$kernel" ]; then
    resolve() { apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1; }
    kpkg=$(resolve)
    [ -n "$kpkg" ] || { apt-get update -qq >&2 || true; kpkg=$(resolve); }
    [ -n "$kpkg" ] || die "cannot resolve the kernel package of linux-image-amd64"
    note "fetching the Debian kernel package $kpkg into $cache"
    dl=$(mktemp -d "$cache/download.XXXXXX")
    chmod 777 "$dl" # apt's sandbox user writes the download
    ( cd "$dl" && apt-get download "$kpkg" >&2 ) || die "apt-get download $kpkg failed"
    dpkg -x "$dl"/*.deb "$dl/x" && cp "$dl"/x/boot/vmlinuz-* "$cache/" && rm -rf "$dl"
    kernel=$(ls "$cache"/vmlinuz-* | sort -V | tail -n 1)
fi
init_bin=$cache/init-$(sha256sum "$here/init.c" | cut -c1-16)
if [ ! -x "$init_bin" ]; then
    gcc -O2 -static -o "$init_bin.tmp" "$here/init.c" || die "building the guest's init failed"
    mv "$init_bin.tmp" "$init_bin"
fi

# ---- the guest's files: init, programs, their libraries -------------------------------------
mkdir -p "$cache/runs"
work=$(mktemp -d "$cache/runs/run.XXXXXX")
bochs_pid="" drain_pid=""
stop_bochs() { # the term display ignores SIGTERM: SIGTERM, then SIGKILL
    if [ -n "$bochs_pid" ] && kill -0 "$bochs_pid" 2>/dev/null; then
        kill -TERM "$bochs_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$bochs_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$bochs_pid" 2>/dev/null || true
    fi
    [ -z "$bochs_pid" ] || wait "$bochs_pid" 2>/dev/null || true
    [ -z "$drain_pid" ] || { kill "$drain_pid" 2>/dev/null || true; wait "$drain_pid" 2>/dev/null || true; }
    bochs_pid="" drain_pid=""
}
cleanup() {
    stop_bochs
    if [ "$keep" = 0 ]; then rm -rf "$work"; else note "work dir kept: $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$work/initramfs
mkdir -p "$root"/{bochs-run,dev,proc,sys,tmp,bin} "$work/iso/isolinux"
cp "$init_bin" "$root/init"
add_file() { # $1 host path → same path in the guest (symlinks resolved)
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}
n=0
while [ $# -gt 0 ]; do
    prog=$1; shift
    [ -f "$prog" ] && [ -x "$prog" ] || die "$prog is not an executable file"
    args=()
    while [ $# -gt 0 ] && [ "$1" != --then ]; do args+=("$1"); shift; done
    [ $# -eq 0 ] || shift
    objcopy --strip-debug "$prog" "$root/bochs-run/prog.$n" 2>/dev/null || cp "$prog" "$root/bochs-run/prog.$n"
    printf '%s\0' "$(basename "$prog")" ${args[@]+"${args[@]}"} > "$root/bochs-run/argv.$n"
    interp=$(readelf -lW "$prog" | sed -n 's/.*Requesting program interpreter: \(.*\)\]$/\1/p')
    if [ -n "$interp" ]; then
        add_file "$interp"
        for lib in $(ldd "$prog" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p'); do add_file "$lib"; done
    fi
    n=$((n + 1))
done
printf '%s\0' "$n" > "$root/bochs-run/count"
{ printf '%s\0' PATH=/bin HOME=/tmp TMPDIR=/tmp; [ ${#envs[@]} -eq 0 ] || printf '%s\0' "${envs[@]}"; } \
    > "$root/bochs-run/env"
# Uncompressed newc cpio: nothing more to decompress inside the (slow) emulator.
( cd "$root" && find . -print0 | cpio --null -o -H newc --quiet ) > "$work/iso/initrd.img"
cp "$kernel" "$work/iso/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
# clearcpuid= works around Bochs 2.7 CPU-model bugs that otherwise cost the guest AVX or hang it:
#  321,323 (XSAVEC, XSAVES): CPUID(0xD,1).EBX reports the standard-format size, the kernel's
#          compacted-size check fails and it disables XSAVE, i.e. all of AVX/AVX-512;
#  515,516 (PKU, OSPKE): CPUID(0xD,9) (PKRU state) reads as zero ("misordered xstate"), same;
#  297,580 (ERMS, FSRM): the kernel's `rep movsb` copy routines loop on exceptions at boot.
# The guest then runs XSAVE in standard format with x87, SSE, AVX, opmask and ZMM state. Only
# the kernel's view changes: programs still see the emulated CPU's CPUID.
cmdline="console=ttyS0,115200 loglevel=4 panic=-1 nokaslr mitigations=off tsc=reliable noresume"
cmdline="$cmdline nomodeset clearcpuid=297,321,323,515,516,580"
cat > "$work/iso/isolinux/isolinux.cfg" <<EOF
DEFAULT run
PROMPT 0
TIMEOUT 0
LABEL run
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND $cmdline
EOF
xorriso -as mkisofs -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table -R -J "$work/iso" 2>"$work/xorriso.log" \
    || { cat "$work/xorriso.log" >&2; die "xorriso failed"; }
rm -rf "$work/iso" "$root"

: > "$work/com1.txt"
: > "$work/com2.txt"
cat > "$work/bochsrc" <<EOF
config_interface: textconfig
display_library: term
megs: $megs
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
cpu: model=$cpu, count=1, ips=200000000, reset_on_triple_fault=0
clock: sync=none, time0=local
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path="$work/boot.iso", status=inserted
ata1: enabled=0
boot: cdrom
floppy_bootsig_check: disabled=1
com1: enabled=1, mode=file, dev="$work/com1.txt"
com2: enabled=1, mode=file, dev="$work/com2.txt"
parport1: enabled=0
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
mouse: enabled=0
vga: extension=vbe, update_freq=2
usb_uhci: enabled=0
log: "$work/bochs.log"
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
EOF
# Debian's bochs-bin has the internal debugger, which stops at a prompt before the first
# instruction: a command file continues, then quits.
printf 'c\nquit\n' > "$work/dbg.rc"

# ---- run ------------------------------------------------------------------------------------
t0=$(date +%s.%N)
note "cpu=$cpu kernel=$(basename "$kernel") programs=$n"
( cd "$work" && export TERM=xterm
  exec setsid bochs-bin -q -f "$work/bochsrc" -rc "$work/dbg.rc" </dev/null >"$work/bochs.out" 2>&1 ) &
bochs_pid=$!
# The term display draws the guest's screen into a pty it opens itself ('Bochs connected to
# screen "/dev/pts/N"'); unread, the pty fills and Bochs blocks. Drain it (raw, no echo: echoed
# bytes would come back to Bochs as key presses).
start_drain() {
    [ -z "$drain_pid" ] || return 0
    local pts
    pts=$(sed -n 's/^Bochs connected to screen "\(.*\)"$/\1/p' "$work/bochs.out" 2>/dev/null | head -n 1)
    [ -n "$pts" ] && [ -c "$pts" ] || return 0
    stty -F "$pts" raw -echo 2>/dev/null || true
    cat "$pts" >/dev/null 2>&1 </dev/null &
    drain_pid=$!
}
tail_pid=""
[ "$verbose" = 0 ] || { tail -n +1 -f "$work/com1.txt" >&2 & tail_pid=$!; }
deadline=$(( $(date +%s) + timeout_s )) reason="" t_start=""
while kill -0 "$bochs_pid" 2>/dev/null; do
    start_drain
    if [ -z "$t_start" ] && grep -q '^BOCHS_PROG_BEGIN' "$work/com2.txt"; then
        t_start=$(date +%s.%N)
        note "guest booted in $(secs "$t_start" "$t0") s"
    fi
    if grep -q '^BOCHS_EXIT_STATUS=' "$work/com2.txt"; then
        for _ in $(seq 1 20); do kill -0 "$bochs_pid" 2>/dev/null || break; sleep 0.5; done
        break
    fi
    if grep -q 'Kernel panic' "$work/com1.txt"; then reason="guest kernel panic"; break; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then reason="timeout after ${timeout_s} s"; break; fi
    sleep 1
done
t1=$(date +%s.%N)
stop_bochs
[ -z "$tail_pid" ] || { kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; }

flags=$(sed -n 's/^BOCHS_CPU_FLAGS://p' "$work/com2.txt" | tr ' ' '\n' | grep '^avx512' | tr '\n' ' ' || true)
[ ! -s "$work/com2.txt" ] || note "guest CPU:$(sed -n 's/^BOCHS_CPU_MODEL://p' "$work/com2.txt"); AVX-512 flags: ${flags:-none}"
grep -av -e '^BOCHS_CPU_' -e '^BOCHS_EXIT_STATUS=' "$work/com2.txt" \
    | sed 's/^BOCHS_PROG_BEGIN \([0-9]*\)$/[bochs] program \1:/' || true
if status=$(sed -n 's/^BOCHS_EXIT_STATUS=\([0-9]*\).*/\1/p' "$work/com2.txt") && [ -n "$status" ]; then
    note "exit status $status; wall: boot $(secs "${t_start:-$t1}" "$t0") s, programs $(secs "$t1" "${t_start:-$t1}") s"
    exit "$status"
fi
note "no exit status from the guest (${reason:-Bochs exited}) after $(secs "$t1" "$t0") s"
note "last kernel console lines:"
tail -n 25 "$work/com1.txt" >&2 || true
note "last Bochs log lines:"
grep -v '^\s*$' "$work/bochs.log" 2>/dev/null | tail -n 15 >&2 || true
[ "$keep" = 1 ] || note "(run with --keep to inspect the work dir)"
case "$reason" in timeout*) exit 124 ;; *) exit 125 ;; esac
