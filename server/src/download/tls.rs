//! The HTTP client for downloads, and its TLS set-up.
//!
//! TLS is rustls with its `ring` provider: maintained and audited, and small to cross-compile
//! (its C and assembly build with the target's C compiler, which `cargo xtask build-images` sets
//! as `CC_<triple>`; aws-lc-rs would also need cmake for the cross builds). Certificates are
//! checked by `rustls-platform-verifier`, which on Linux reads the system CA bundle
//! (`/etc/ssl/certs/ca-certificates.crt` or `SSL_CERT_FILE`); the container image ships one.
//!
//! This module does NOT download anything; it builds clients with the download timeouts.

use std::sync::Once;

use super::{DownloadError, DownloadOptions};

/// Install the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first; that one is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with the connect and read timeouts from `options` (never a total deadline, which
/// would kill a large download). `follow_redirects: false` is for the hub's metadata `HEAD`.
pub fn client(
    options: &DownloadOptions,
    follow_redirects: bool,
    url: &str,
) -> Result<reqwest::Client, DownloadError> {
    install_crypto_provider();
    let builder = || {
        reqwest::Client::builder()
            .user_agent(concat!("bitnet-server/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .redirect(if follow_redirects {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            })
    };
    match builder().build() {
        Ok(client) => Ok(client),
        // Without a CA bundle the platform verifier refuses to start. A plain-HTTP mirror
        // (HF_ENDPOINT=http://…) does not need one, so allow that case to proceed.
        Err(_) if url.starts_with("http://") => builder()
            .tls_certs_only(Vec::new())
            .build()
            .map_err(|e| DownloadError::Client(e.to_string())),
        Err(e) => Err(DownloadError::Client(format!(
            "{e}; HTTPS needs the system CA certificates (/etc/ssl/certs/ca-certificates.crt, or \
             set SSL_CERT_FILE to a PEM bundle)"
        ))),
    }
}
