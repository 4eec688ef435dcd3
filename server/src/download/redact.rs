//! THE one way a URL is printed: credentials removed. `--model-url` may carry
//! `user:password@` or a presigned query string (`X-Amz-Signature=…`, `sig=…`, `token=…`), and
//! `HF_ENDPOINT` may carry a mirror's credentials; logs, errors, `/health` and progress show a
//! URL only through [`redact_url`].
//!
//! This module does NOT decide where credentials are sent (see `tls` and the parent module).

/// What replaces a secret.
const MASK: &str = "***";

/// `https://user:pw@host/p/m.gguf?X-Amz-Signature=abc&x=1#f` →
/// `https://***@host/p/m.gguf?X-Amz-Signature=***&x=***`: user information and every query
/// value are masked (query names stay, they say what was there), the fragment is dropped. A
/// string that does not parse as a URL keeps only what precedes any `@`, `?` or `#` risk:
/// the part before `?`/`#`, with user information masked.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_password(None);
                let _ = parsed.set_username(MASK);
            }
            parsed.set_fragment(None);
            if parsed.query().is_some() {
                let names: Vec<String> = parsed
                    .query_pairs()
                    .map(|(name, _)| name.into_owned())
                    .collect();
                let query = names
                    .iter()
                    .map(|n| format!("{n}={MASK}"))
                    .collect::<Vec<_>>()
                    .join("&");
                parsed.set_query(Some(&query));
            }
            parsed.to_string()
        }
        _ => {
            let base = url.split(['?', '#']).next().unwrap_or_default();
            match base.split_once("://") {
                Some((scheme, rest)) => {
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                    let user = if authority.contains('@') {
                        format!("{MASK}@")
                    } else {
                        String::new()
                    };
                    format!("{scheme}://{user}{host}{path}")
                }
                None => base.rsplit_once('@').map_or(base, |(_, h)| h).to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let cases = [
            (
                "https://alice:s3cret@models.example/m.gguf",
                "https://***@models.example/m.gguf",
            ),
            (
                "https://bucket.s3.example/m.gguf?X-Amz-Credential=AKIA123&X-Amz-Signature=deadbeef",
                "https://bucket.s3.example/m.gguf?X-Amz-Credential=***&X-Amz-Signature=***",
            ),
            (
                "https://blob.example/m.gguf?sv=2020&sig=abc%2Bdef#frag",
                "https://blob.example/m.gguf?sv=***&sig=***",
            ),
            (
                "http://127.0.0.1:8080/files/m.gguf",
                "http://127.0.0.1:8080/files/m.gguf",
            ),
            ("https://token@h.example/x", "https://***@h.example/x"),
            ("not a url?token=abc", "not a url"),
            ("http://u:p@[bad/x?token=abc", "http://***@[bad/x"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
    }
}
