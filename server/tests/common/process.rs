//! The real `bitnet-server serve` binary as a child process on a model file, for the end-to-end
//! tests (`engine_e2e.rs`, `embeddings_e2e.rs`), and the project venv's Python for the client
//! scripts they run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the server crate's parent).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running `bitnet-server serve` on 127.0.0.1, ready when `start` returns, killed on drop.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
}

impl ServerProcess {
    /// Serve `model` with two threads and `extra` arguments; waits up to 60 s for `/health`.
    pub fn start(model: &Path, extra: &[&str]) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_bitnet-server"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--threads",
                "2",
            ])
            .arg("--model")
            .arg(model)
            .args(extra)
            .env_remove("BITNET_KERNEL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = ServerProcess { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = s.request("GET", "/health", "") {
                return s;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP/1.1 request; returns the status and body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        http(self.port, method, path, body)
    }

    /// A JSON request: status and parsed body (`Null` when the body is not JSON).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.request(method, path, &body.to_string()).unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The sum of a counter's series in `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, m) = self.request("GET", "/metrics", "").unwrap();
        m.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`); the status and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The project venv's Python when it has `modules` importable; `None` (with a SKIPPED line) when
/// not, unless `BITNET_REQUIRE_OPENAI_TEST=1` (CI), which makes that a failure.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let py = workspace().join("target/pyenv/bin/python");
    let import = format!("import {}", modules.join(", "));
    let ok = Command::new(&py)
        .args(["-c", &import])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let required = std::env::var("BITNET_REQUIRE_OPENAI_TEST").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "BITNET_REQUIRE_OPENAI_TEST=1 but target/pyenv lacks {modules:?} (cargo xtask doctor \
         --install ci installs them)"
    );
    eprintln!("SKIPPED: no target/pyenv with {modules:?} (cargo xtask ci creates it)");
    None
}

/// [`python_with`] the `openai` client.
pub fn python_with_openai() -> Option<PathBuf> {
    python_with(&["openai"])
}
