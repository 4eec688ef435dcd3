//! Helpers shared by the xtask integration tests (`images.rs`, `compose.rs`): the workspace root,
//! running the built xtask, a minimal HTTP/1.1 client for the server's port, a tiny model.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One xtask run at a time (they share output dirs; timing must not include waiting).
pub fn xtask_lock() -> MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn xtask(args: &[&str], envs: &[(&str, &str)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .output()
        .expect("run xtask");
    (out, start.elapsed())
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    out
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_at("127.0.0.1", port, method, path, body)
}

/// POST `request` as JSON to `path` on 127.0.0.1:`port`, require 200, and return the parsed
/// reply with its text (for assertion messages).
pub fn post_json_ok(
    port: u16,
    path: &str,
    request: &serde_json::Value,
) -> (serde_json::Value, String) {
    let (status, body) = http(port, "POST", path, Some(&request.to_string()))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(status, 200, "POST {path}: {body}");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {path}: {e}: {body}"));
    (v, body)
}

/// [`http`] to `host` (e.g. a container's address on a Docker bridge).
pub fn http_at(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model.gguf");
    let (o, _) = xtask(
        &[
            "gen-model",
            "--preset",
            "tiny",
            "--format",
            "i2_s",
            "--out",
            model.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "gen-model failed:\n{}", text(&o));
    model
}

/// `cargo xtask <command> --check --out <out>` after replacing `from` by `to` in `<out>/<file>`
/// must fail, naming the file and the command that refreshes it.
pub fn check_catches_a_hand_edit(command: &str, out: &Path, file: &str, from: &str, to: &str) {
    let path = out.join(file);
    let edited = std::fs::read_to_string(&path).unwrap().replace(from, to);
    std::fs::write(&path, edited).unwrap();
    let (o, _) = xtask(&[command, "--check", "--out", out.to_str().unwrap()], &[]);
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains(file) && msg.contains(&format!("`cargo xtask {command}`")),
        "{msg}"
    );
    eprintln!("--check on a hand-edited copy:\n{msg}");
}
