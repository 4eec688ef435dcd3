//! The on-disk model cache, laid out like the Hugging Face hub cache so an existing
//! `~/.cache/huggingface/hub` directory can be reused with `--model-dir`:
//!
//! ```text
//! <model-dir>/models--<owner>--<name>/        one directory per Hub repo
//!     blobs/<sha256>                          verified files, named by their digest
//!     blobs/<key>.part (+ <key>.part.json)    an interrupted download and its resume validator
//!     snapshots/<commit>/<file>               symlink → ../../blobs/<sha256>
//!     refs/<revision>                         the commit the revision pointed to last time
//!     .locks/<key>.lock                       held while one process downloads that blob
//! <model-dir>/urls--<host>--<hash>/           one directory per --model-url (hash of the URL)
//!     blobs/…, snapshots/url/<file-name>, .locks/…
//! ```
//!
//! `<key>` is the blob's expected sha256, or `<commit>--<file>` when no digest is known before
//! the download.
//!
//! A file appears under `blobs/<sha256>` only after its digest was checked (or, without an
//! expected digest, computed) and the file was fsynced; partial data only ever lives in `.part`
//! files. So finding `blobs/<sha256>` is proof enough and a restart reuses it without network.
//!
//! # Several processes on one cache
//!
//! Replicas may share the cache (one Docker volume mounted into several containers, a
//! ReadWriteMany claim), and the server is PID 1 in every container, so nothing here may rely on
//! the process id being unique:
//!
//! - **The download lock** is an advisory `flock(2)` on `.locks/<key>.lock` ([`LockFile`]). It
//!   belongs to the open file, not the process id, so it excludes two containers with the same
//!   PID, and two downloaders in one process. Containers on one host share the kernel, so it
//!   works across containers on one Docker volume; the kernel drops it when the holder dies,
//!   however it dies, so a killed replica never leaves a stale lock. Lock files are never
//!   deleted: removing one while another process waits on it would let a third lock a new file
//!   of the same name, and two would hold "the" lock. (Over NFS, Linux maps `flock` to NFS byte
//!   range locks, which need a server with lock support; a filesystem without locking makes
//!   the lock fail with an error that names the lock file rather than go unlocked.)
//! - **Everything written in the repo directory is written under that lock**: the `.part` file
//!   and its sidecar, the blob's rename, the snapshot link and the ref. The `.part` of a killed
//!   replica is therefore never a live one: the next holder re-hashes and resumes it.
//! - **Temporary names are unique per write**, not per process: `.<name>.<random>.tmp`, created
//!   with `O_EXCL` (a symlink's creation is exclusive by itself) and renamed over the final name,
//!   which is atomic; readers see the old entry or the new one, never a partial one. A replica
//!   killed between creating and renaming leaves its temporary file behind; [`RepoCache::record`]
//!   removes such files once they are older than [`STALE_TEMP_AGE`], far longer than any live
//!   write takes (microseconds to an fsync), so it never removes one that is still in use.
//!
//! This module does NOT download anything or wait for a lock (the caller polls
//! [`LockFile::try_lock`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::source::{ModelSource, Sha256Hex};
use super::{DownloadError, sanitize};

/// The snapshot name used for URL sources (they have no revisions).
pub const URL_SNAPSHOT: &str = "url";

/// A temporary file of this age is left over from a process that died while writing it.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// How temporary names end (`.<name>.<random>.tmp`).
const TEMP_SUFFIX: &str = ".tmp";

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

    /// Point `snapshots/<snapshot>/<file>` at the blob `sha` and, for a named revision, record
    /// `refs/<revision>` → `<commit>`; first remove temporary files that processes which died
    /// while writing there left behind. Call with the blob's [`LockFile`] held.
    pub fn record(
        &self,
        snapshot: &str,
        file: &str,
        sha: &Sha256Hex,
        named_ref: Option<(&str, &str)>,
    ) -> Result<PathBuf, DownloadError> {
        let link = self.snapshot_path(snapshot, file);
        if let Some(dir) = link.parent() {
            remove_stale_temps(dir, STALE_TEMP_AGE);
        }
        let link = self.link_snapshot(snapshot, file, sha)?;
        if let Some((revision, commit)) = named_ref {
            let path = self.dir.join("refs").join(revision);
            if let Some(dir) = path.parent() {
                remove_stale_temps(dir, STALE_TEMP_AGE);
            }
            self.write_ref(revision, commit)?;
        }
        Ok(link)
    }

    /// Point `snapshots/<snapshot>/<file>` at the blob `sha` (relative symlink; hard link where
    /// symlinks are not supported), replacing the entry atomically.
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
        let tmp = create_temp(&link, |tmp| {
            std::os::unix::fs::symlink(&target, tmp).or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
                fs::hard_link(self.blob(sha), tmp)
            })
        })
        .map_err(|e| DownloadError::io("linking the snapshot entry", &link, e))?;
        rename_temp(&tmp, &link)
            .map_err(|e| DownloadError::io("linking the snapshot entry", &link, e))?;
        Ok(link)
    }

    /// `.locks/<key>.lock`, the lock for the blob a download with this key produces.
    pub fn lock_path(&self, key: &str) -> PathBuf {
        self.dir
            .join(".locks")
            .join(format!("{}.lock", sanitize(key)))
    }

    /// Open (creating it if needed) the lock file for `key`; see [`LockFile::try_lock`].
    pub fn open_lock(&self, key: &str) -> Result<LockFile, DownloadError> {
        let path = self.lock_path(key);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| DownloadError::io("creating the directory", dir, e))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DownloadError::io("opening the lock file", &path, e))?;
        Ok(LockFile { file, path })
    }
}

/// An open lock file. The lock is an `flock(2)` on the open file: held until this value is
/// dropped or the process dies, exclusive between processes and between two `LockFile`s of one
/// process alike.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Take the lock if nobody holds it: `Ok(true)` when this handle now holds it, `Ok(false)`
    /// when another holder has it. Never blocks.
    pub fn try_lock(&self) -> Result<bool, DownloadError> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(DownloadError::io(
                "locking (the model directory's filesystem must support flock)",
                &self.path,
                e,
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Create a temporary entry next to `path` with `create`, under a name no other writer uses
/// (`.<name>.<random>.tmp`; `create` must fail with `AlreadyExists` if the name is taken, and
/// then another name is tried). Returns the name created.
fn create_temp(
    path: &Path,
    mut create: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<PathBuf> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut attempts = 0;
    loop {
        let tmp = parent.join(format!(
            ".{name}.{:016x}{TEMP_SUFFIX}",
            bitnet_rng::random_u64()
        ));
        match create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
            Ok(()) => return Ok(tmp),
        }
    }
}

/// Rename a temporary entry over `path`; on failure the temporary entry is removed.
fn rename_temp(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

/// Remove the temporary entries (`.<name>.<random>.tmp`) in `dir` last modified more than `age`
/// ago: their writers died before renaming them. Best effort: errors are ignored (another
/// process may remove the same file first).
pub fn remove_stale_temps(dir: &Path, age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        // The entry itself (a temporary symlink's target may not exist).
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
        if stale {
            tracing::info!(path = %entry.path().display(), "removing a temporary file a stopped process left behind");
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Write `bytes` to `path` through a temporary file of its own (see [`create_temp`]), fsync,
/// rename: readers see the old content or the new, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)
        .map_err(|e| DownloadError::io("creating the directory", parent, e))?;
    let mut file = None;
    let tmp = create_temp(path, |tmp| {
        file = Some(File::options().write(true).create_new(true).open(tmp)?);
        Ok(())
    })
    .map_err(|e| DownloadError::io("creating a temporary file for", path, e))?;
    let written = match file {
        Some(mut f) => f.write_all(bytes).and_then(|_| f.sync_all()),
        None => Err(io::Error::other("no file was created")),
    };
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(DownloadError::io("writing", &tmp, e));
    }
    rename_temp(&tmp, path).map_err(|e| DownloadError::io("renaming into place", path, e))?;
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
    fn lock_is_exclusive_between_handles_of_one_process() {
        let root = tempfile::tempdir().unwrap();
        let src = ModelSource::hub("o/n", "m.gguf", "main", None).unwrap();
        let cache = RepoCache::for_source(root.path(), &src).unwrap();
        let first = cache.open_lock("key").unwrap();
        assert!(first.try_lock().unwrap());
        // Another open of the same file, in this process (as two containers' PID 1 would be):
        let second = cache.open_lock("key").unwrap();
        assert!(!second.try_lock().unwrap(), "held by the first handle");
        assert!(cache.open_lock("other").unwrap().try_lock().unwrap());
        drop(first);
        assert!(
            second.try_lock().unwrap(),
            "released when the holder is dropped"
        );
        assert!(
            cache.lock_path("key").exists(),
            "lock files are never deleted"
        );
    }

    #[test]
    fn temporary_names_are_unique_and_stale_ones_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs/main");
        // Many writers of one file (same PID), all at once: each has its own temporary file.
        std::thread::scope(|s| {
            for i in 0..16 {
                let path = &path;
                s.spawn(move || write_atomically(path, format!("commit{i}").as_bytes()).unwrap());
            }
        });
        assert!(fs::read_to_string(&path).unwrap().starts_with("commit"));
        let refs = path.parent().unwrap();
        let names = |d: &Path| fs::read_dir(d).unwrap().count();
        assert_eq!(names(refs), 1, "no temporary file left");
        // A writer killed before its rename leaves one; it goes once it is old enough.
        let leftover = refs.join(".main.00000000deadbeef.tmp");
        fs::write(&leftover, b"half").unwrap();
        remove_stale_temps(refs, STALE_TEMP_AGE);
        assert!(leftover.exists(), "a recent temporary file may be in use");
        std::thread::sleep(Duration::from_millis(20));
        remove_stale_temps(refs, Duration::from_millis(10));
        assert!(!leftover.exists());
        assert!(path.exists(), "only temporary files are swept");
    }
}
