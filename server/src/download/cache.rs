//! The on-disk model cache, laid out like the Hugging Face hub cache so an existing
//! `~/.cache/huggingface/hub` directory can be reused with `--model-dir`:
//!
//! ```text
//! <model-dir>/models--<owner>--<name>/        one directory per Hub repo
//!     blobs/<sha256>                          verified files, named by their digest
//!     blobs/<key>.part (+ <key>.part.json)    an interrupted download and its resume validator
//!     snapshots/<commit>/<file>               symlink → ../../blobs/<sha256>
//!     refs/<revision>                         the commit the revision pointed to last time
//!     .locks/<file>.lock                      held while one process downloads that file
//! <model-dir>/urls--<host>--<hash>/           one directory per --model-url (hash of the URL)
//!     blobs/…, snapshots/url/<file-name>, .locks/…
//! ```
//!
//! A file appears under `blobs/<sha256>` only after its digest was checked (or, without an
//! expected digest, computed) and the file was fsynced; partial data only ever lives in `.part`
//! files. So finding `blobs/<sha256>` is proof enough and a restart reuses it without network.
//!
//! This module does NOT download anything.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::source::{ModelSource, Sha256Hex};
use super::{DownloadError, sanitize};

/// The snapshot name used for URL sources (they have no revisions).
pub const URL_SNAPSHOT: &str = "url";

/// One repo's (or URL's) directory in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    dir: PathBuf,
}

impl RepoCache {
    /// The cache directory for a remote source (`None` for local files).
    pub fn for_source(root: &Path, source: &ModelSource) -> Option<RepoCache> {
        match source {
            ModelSource::Local { .. } => None,
            ModelSource::Hub { repo, .. } => Some(RepoCache {
                dir: root.join(format!("models--{}", repo.replace('/', "--"))),
            }),
            ModelSource::Url { url, .. } => {
                let host = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(sanitize))
                    .unwrap_or_else(|| "host".into());
                let digest = hex::encode(Sha256::digest(url.as_bytes()));
                Some(RepoCache {
                    dir: root.join(format!("urls--{host}--{}", &digest[..16])),
                })
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a verified file with this digest lives.
    pub fn blob(&self, sha: &Sha256Hex) -> PathBuf {
        self.dir.join("blobs").join(sha.as_str())
    }

    /// A verified blob, if present.
    pub fn existing_blob(&self, sha: &Sha256Hex) -> Option<PathBuf> {
        let path = self.blob(sha);
        path.is_file().then_some(path)
    }

    /// The in-progress file for a download identified by `key`.
    pub fn part(&self, key: &str) -> PathBuf {
        self.dir
            .join("blobs")
            .join(format!("{}.part", sanitize(key)))
    }

    /// `snapshots/<snapshot>/<file>`.
    pub fn snapshot_path(&self, snapshot: &str, file: &str) -> PathBuf {
        self.dir.join("snapshots").join(snapshot).join(file)
    }

    /// The file a snapshot entry points at, if the entry and its target exist.
    pub fn lookup_snapshot(&self, snapshot: &str, file: &str) -> Option<PathBuf> {
        let path = self.snapshot_path(snapshot, file);
        let target = fs::canonicalize(&path).ok()?;
        target.is_file().then_some(target)
    }

    /// The commit `refs/<revision>` recorded, if any.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(self.dir.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        (!commit.is_empty() && !commit.contains('/') && commit != "..").then(|| commit.to_string())
    }

    /// Record that `revision` points at `commit`.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), DownloadError> {
        let path = self.dir.join("refs").join(revision);
        write_atomically(&path, commit.as_bytes())
    }

    /// Point `snapshots/<snapshot>/<file>` at the blob `sha` (relative symlink; hard link where
    /// symlinks are not supported).
    pub fn link_snapshot(
        &self,
        snapshot: &str,
        file: &str,
        sha: &Sha256Hex,
    ) -> Result<PathBuf, DownloadError> {
        let link = self.snapshot_path(snapshot, file);
        let parent = link.parent().unwrap_or(&self.dir).to_path_buf();
        fs::create_dir_all(&parent)
            .map_err(|e| DownloadError::io("creating the directory", &parent, e))?;
        // snapshots/<snapshot>/<a>/<b>/file → ../../(../../)blobs/<sha>
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(sha.as_str());
        let tmp = parent.join(format!(".{}.tmp-link", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let linked = std::os::unix::fs::symlink(&target, &tmp)
            .or_else(|_| fs::hard_link(self.blob(sha), &tmp));
        linked.map_err(|e| DownloadError::io("linking the snapshot entry", &link, e))?;
        fs::rename(&tmp, &link)
            .map_err(|e| DownloadError::io("linking the snapshot entry", &link, e))?;
        Ok(link)
    }

    /// Take the per-file download lock, waiting for another process that holds it.
    /// `on_wait` runs once if the lock is busy. Blocking: call from a blocking thread.
    pub fn lock(&self, file: &str, on_wait: impl FnOnce(&Path)) -> Result<File, DownloadError> {
        let dir = self.dir.join(".locks");
        fs::create_dir_all(&dir)
            .map_err(|e| DownloadError::io("creating the directory", &dir, e))?;
        let path = dir.join(format!("{}.lock", sanitize(file)));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DownloadError::io("opening the lock file", &path, e))?;
        match lock.try_lock() {
            Ok(()) => Ok(lock),
            Err(fs::TryLockError::WouldBlock) => {
                on_wait(&path);
                lock.lock()
                    .map_err(|e| DownloadError::io("locking", &path, e))?;
                Ok(lock)
            }
            Err(fs::TryLockError::Error(e)) => Err(DownloadError::io("locking", &path, e)),
        }
    }
}

/// Write `bytes` to `path` through a temporary file, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| DownloadError::io("creating the directory", parent, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| DownloadError::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| DownloadError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| DownloadError::io("renaming into place", path, e))?;
    Ok(())
}

/// fsync a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_links() {
        let root = tempfile::tempdir().unwrap();
        let src = ModelSource::hub("org/name", "sub/m.gguf", "main", None).unwrap();
        let cache = RepoCache::for_source(root.path(), &src).unwrap();
        assert_eq!(cache.dir(), root.path().join("models--org--name"));
        let sha = Sha256Hex::parse(&"a".repeat(64)).unwrap();
        fs::create_dir_all(cache.blob(&sha).parent().unwrap()).unwrap();
        fs::write(cache.blob(&sha), b"weights").unwrap();
        assert!(cache.lookup_snapshot("c0ffee", "sub/m.gguf").is_none());
        cache.link_snapshot("c0ffee", "sub/m.gguf", &sha).unwrap();
        let found = cache.lookup_snapshot("c0ffee", "sub/m.gguf").unwrap();
        assert_eq!(fs::read(found).unwrap(), b"weights");
        // Re-linking replaces the entry.
        cache.link_snapshot("c0ffee", "sub/m.gguf", &sha).unwrap();
        cache.write_ref("main", "c0ffee").unwrap();
        assert_eq!(cache.read_ref("main").as_deref(), Some("c0ffee"));
        assert_eq!(cache.read_ref("other"), None);
    }

    #[test]
    fn url_sources_get_distinct_directories() {
        let root = Path::new("/cache");
        let a = ModelSource::url("https://h.example/a.gguf", None).unwrap();
        let b = ModelSource::url("https://h.example/b.gguf", None).unwrap();
        let da = RepoCache::for_source(root, &a).unwrap().dir().to_path_buf();
        let db = RepoCache::for_source(root, &b).unwrap().dir().to_path_buf();
        assert_ne!(da, db);
        assert!(
            da.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("urls--h.example--")
        );
    }

    #[test]
    fn lock_is_exclusive_between_handles() {
        let root = tempfile::tempdir().unwrap();
        let src = ModelSource::hub("o/n", "m.gguf", "main", None).unwrap();
        let cache = RepoCache::for_source(root.path(), &src).unwrap();
        let held = cache
            .lock("m.gguf", |_| panic!("first lock must not wait"))
            .unwrap();
        let c2 = cache.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = c2.lock("m.gguf", |_| tx.send(()).unwrap()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("second locker waits");
        drop(held);
        t.join().unwrap();
    }
}
