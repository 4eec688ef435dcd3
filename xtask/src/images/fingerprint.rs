//! Input fingerprints: a SHA-256 over labelled inputs (strings, files, directory trees in sorted
//! order), and small JSON stamp files that remember the fingerprint a result was made from. Lets
//! `build-images` skip a tier's cargo build or image assembly when nothing it depends on changed.
//! It does NOT decide which inputs matter; callers list them.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Accumulates labelled inputs.
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// Start a fingerprint for a purpose (the label keeps unrelated fingerprints apart).
    pub fn new(purpose: &str) -> Self {
        let mut f = Fingerprint(Sha256::new());
        f.str("purpose", purpose);
        f
    }

    /// Add raw bytes under a label (length-prefixed, so concatenations cannot collide).
    pub fn bytes(&mut self, label: &str, data: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), data] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    /// Add a string.
    pub fn str(&mut self, label: &str, s: &str) -> &mut Self {
        self.bytes(label, s.as_bytes())
    }

    /// Add a file's content (or the fact that it is missing).
    pub fn file(&mut self, label: &str, path: &Path) -> &mut Self {
        match std::fs::read(path) {
            Ok(b) => self.bytes(label, &b),
            Err(_) => self.str(label, "<missing>"),
        }
    }

    /// Add every file under `dir` (recursively, sorted), keyed by its path relative to `dir`.
    /// Directories named `target` or starting with `.` are skipped.
    pub fn tree(&mut self, label: &str, dir: &Path) -> Result<&mut Self> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        files.sort();
        self.str(label, &format!("{} files", files.len()));
        for rel in files {
            let path = dir.join(&rel);
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            self.bytes(&rel, &data);
        }
        Ok(self)
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = e.file_type()?;
        if ty.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            collect(base, &e.path(), out)?;
        } else if ty.is_file() {
            let rel = e
                .path()
                .strip_prefix(base)
                .unwrap_or(&e.path())
                .to_string_lossy()
                .into_owned();
            out.push(rel);
        }
    }
    Ok(())
}

/// Read a JSON stamp; `None` if missing or unreadable (treated as "must redo").
pub fn read_stamp<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Write a JSON stamp (atomically).
pub fn write_stamp<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    super::oci::write_atomic(path, &serde_json::to_vec_pretty(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_boundaries_matter() {
        let fp = |pairs: &[(&str, &str)]| {
            let mut f = Fingerprint::new("t");
            for (k, v) in pairs {
                f.str(k, v);
            }
            f.finish()
        };
        assert_eq!(fp(&[("a", "x")]), fp(&[("a", "x")]));
        assert_ne!(fp(&[("a", "xy")]), fp(&[("a", "x"), ("", "y")]));
        assert_ne!(fp(&[("a", "x")]), fp(&[("b", "x")]));
    }

    #[test]
    fn tree_sees_content_and_names_but_not_target_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("src/x")).unwrap();
        std::fs::create_dir_all(d.path().join("target")).unwrap();
        std::fs::write(d.path().join("src/x/a.rs"), "1").unwrap();
        let h = || {
            let mut f = Fingerprint::new("t");
            f.tree("src", d.path()).unwrap();
            f.finish()
        };
        let first = h();
        std::fs::write(d.path().join("target/junk"), "j").unwrap();
        assert_eq!(first, h());
        std::fs::write(d.path().join("src/x/a.rs"), "2").unwrap();
        assert_ne!(first, h());
    }
}
