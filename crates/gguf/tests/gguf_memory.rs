//! Issue 16, item 8: what the metadata of a file costs in memory. Arrays are typed vectors, so a
//! legal array takes about its bytes in the file, and the metadata and tensor table of a file may
//! take at most `HEADER_MEMORY_LIMIT`: a crafted 200 MB array is refused before it is allocated.
//!
//! Each file is loaded in a child process (this test binary run again with `CHILD` set, under
//! `ulimit -v`, so a regression fails on the limit instead of taking the machine's memory) that
//! prints its peak RSS (`VmHWM`) before and after `GgufFile::open`.

use bitnet_gguf::{GgufFile, HEADER_MEMORY_LIMIT, ValueType};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MB: u64 = 1 << 20;
/// The child's address-space limit. A regression to 32-byte array elements needs 6.4 GB for the
/// 200 MB array and 1.5 GB for the 48 MB one, and dies on this limit.
const CHILD_VM_LIMIT_KB: u64 = 1 << 20;
const CHILD: &str = "BITNET_GGUF_MEMORY_TEST_FILE";

/// A GGUF v3 file with one array `x.blob` of `n` elements of type `et` and no tensors. `body`
/// writes the elements; if it writes fewer than `len` bytes the rest is a hole (sparse, zeros).
fn file_with_array(dir: &Path, et: ValueType, n: u64, len: u64, body: &[u8]) -> PathBuf {
    let path = dir.join(format!("{}-{n}.gguf", et.name()));
    let mut h = Vec::new();
    h.extend_from_slice(b"GGUF");
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // tensors
    h.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    h.extend_from_slice(&6u64.to_le_bytes());
    h.extend_from_slice(b"x.blob");
    h.extend_from_slice(&(ValueType::Array as u32).to_le_bytes());
    h.extend_from_slice(&(et as u32).to_le_bytes());
    h.extend_from_slice(&n.to_le_bytes());
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&h).unwrap();
    f.write_all(body).unwrap();
    f.set_len(h.len() as u64 + len).unwrap();
    path
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Loads `path` in a child process; returns the child's result line and its peak RSS growth.
fn load_in_child(path: &Path) -> (String, u64) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {CHILD_VM_LIMIT_KB} && exec \"$0\" --exact --nocapture --test-threads 1 \
             child_process_loads_the_file"
        ))
        .arg(exe)
        .env(CHILD, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child loading {} failed ({}):\n{stdout}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the test's name on the line where its output starts.
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{stdout}"))
            .to_string()
    };
    let growth = field("rss growth kB: ").parse().unwrap();
    (field("result: "), growth)
}

/// The child's side: does its work only when `CHILD` names a file (as `load_in_child` runs it).
#[test]
fn child_process_loads_the_file() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    let before = vm_hwm_kb();
    let result = match GgufFile::open(Path::new(&path)) {
        Ok(f) => format!("Ok {}", f.get("x.blob").unwrap().type_description()),
        Err(e) => format!("Err {e}"),
    };
    println!("result: {result}");
    println!("rss growth kB: {}", vm_hwm_kb().saturating_sub(before));
}

#[test]
fn a_200_mb_u8_array_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000_000;
    let path = file_with_array(dir.path(), ValueType::U8, n, n, &[]);
    let (result, growth_kb) = load_in_child(&path);
    println!("200 MB u8 array: {result}; peak RSS growth {growth_kb} kB");
    let limit = HEADER_MEMORY_LIMIT.to_string();
    for needle in [
        "Err ",
        "metadata key \"x.blob\" (array[u8; 200000000])",
        "needs 200000000 bytes",
        &format!("{limit}-byte limit"),
        "corrupt or crafted",
    ] {
        assert!(
            result.contains(needle),
            "{result:?} should contain {needle:?}"
        );
    }
    assert!(
        growth_kb * 1024 < 300 * MB,
        "refusing the array grew RSS by {growth_kb} kB"
    );
}

#[test]
fn legal_arrays_cost_about_their_bytes_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // 48 MB of u8: the file's pages (read once) plus a 48 MB vector.
    let n = 48 * MB;
    let path = file_with_array(dir.path(), ValueType::U8, n, n, &[]);
    let (result, growth_kb) = load_in_child(&path);
    println!("48 MiB u8 array: {result}; peak RSS growth {growth_kb} kB");
    assert_eq!(result, format!("Ok array[u8; {n}]"));
    assert!(
        growth_kb * 1024 < 5 * n / 2,
        "a {n}-byte u8 array grew RSS by {growth_kb} kB"
    );

    // 1.5 M strings of 8 bytes, as a tokenizer's merges (24 MB in the file).
    let n = 1_500_000u64;
    let mut body = Vec::with_capacity(16 * n as usize);
    for i in 0..n {
        body.extend_from_slice(&8u64.to_le_bytes());
        body.extend_from_slice(format!("{i:08}").as_bytes());
    }
    let len = body.len() as u64;
    let path = file_with_array(dir.path(), ValueType::String, n, len, &body);
    let (result, growth_kb) = load_in_child(&path);
    println!("{n} strings ({len} bytes): {result}; peak RSS growth {growth_kb} kB");
    assert_eq!(result, format!("Ok array[string; {n}]"));
    assert!(
        growth_kb * 1024 < 5 * len / 2,
        "a {len}-byte string array grew RSS by {growth_kb} kB"
    );
}
