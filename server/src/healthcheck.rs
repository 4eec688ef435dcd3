//! The container health probe: one plain HTTP/1.1 `GET` over a std `TcpStream` with short
//! timeouts, ready only on `200`. The image has no shell or curl, so Docker's `HEALTHCHECK`
//! runs `bitnet-server healthcheck`.
//!
//! This module does NOT speak TLS or follow redirects: it probes the server's own plain-HTTP
//! port.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0:?} is not a probe URL: use http://HOST:PORT/PATH")]
    BadUrl(String),
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no usable answer from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: u16,
    pub body: String,
}

impl ProbeResult {
    pub fn ready(&self) -> bool {
        self.status == 200
    }
}

/// `http://host:port/path` → (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), ProbeError> {
    let bad = || ProbeError::BadUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/health"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(bad)?;
        (h.to_string(), p.strip_prefix(':').unwrap_or("80"))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "80"),
        }
    };
    if host.is_empty() || path.contains(['\r', '\n', ' ']) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok((host, port, path.to_string()))
}

/// GET `url` within `timeout` (connect + request + response in total).
pub fn probe(url: &str, timeout: Duration) -> Result<ProbeResult, ProbeError> {
    let (host, port, path) = parse_url(url)?;
    let addr = format!("{host}:{port}");
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|source| ProbeError::Connect {
            addr: addr.clone(),
            source,
        })?
        .collect();
    let mut last = std::io::Error::other("no addresses");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(ProbeError::Connect {
        addr: addr.clone(),
        source: last,
    })?;
    let proto = |reason: String| ProbeError::Protocol {
        addr: addr.clone(),
        reason,
    };
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: bitnet-server-healthcheck\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining()))
        .map_err(|e| proto(e.to_string()))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| proto(format!("sending: {e}")))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            return Err(proto("timed out waiting for the response".into()));
        }
        stream
            .set_read_timeout(Some(remaining()))
            .map_err(|e| proto(e.to_string()))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.len() > 64 * 1024 {
                    break; // a health body is small; enough to judge
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(proto(format!("reading: {e}"))),
        }
    }
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| proto(format!("not an HTTP response: {status_line:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(ProbeResult { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/health").unwrap(),
            ("127.0.0.1".into(), 8080, "/health".into())
        );
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "/health".into())
        );
        assert_eq!(
            parse_url("http://[::1]:9/h").unwrap(),
            ("::1".into(), 9, "/h".into())
        );
        assert!(parse_url("https://x/health").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:notaport/").is_err());
    }

    #[test]
    #[ignore = "asserts a wall-clock bound: run by cargo xtask ci"]
    fn refused_connection_is_an_error_not_a_hang() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let start = Instant::now();
        let err = probe(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    #[ignore = "asserts a wall-clock bound: run by cargo xtask ci"]
    fn silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let start = Instant::now();
        let err = probe(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, ProbeError::Protocol { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(listener);
    }
}
