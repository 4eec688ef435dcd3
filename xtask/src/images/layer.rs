//! Deterministic layer tarballs: entries sorted by path, numeric owners, no user/group names, one
//! fixed mtime, parent directories made explicit, identical file contents stored once and
//! hard-linked, gzip with a fixed level (header mtime 0, OS byte 255 — flate2's defaults).
//! The same entries always give the same bytes, so the same digests. It does NOT know what goes
//! into a layer (see `rootfs`), nor write blobs anywhere.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

/// The gzip level used for every layer. Changing it changes every digest.
pub const GZIP_LEVEL: u32 = 6;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with these bytes.
    File(Vec<u8>),
}

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Kind and content.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

/// A finished layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// gzip-compressed tar (the blob).
    pub gz: Vec<u8>,
    /// `sha256:<hex>` of `gz`.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

/// Collects entries (keyed by path without a leading `/`) and renders the layer.
#[derive(Debug, Default, Clone)]
pub struct LayerBuilder {
    entries: BTreeMap<String, Entry>,
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) an entry at `path` (`a/b/c`, no leading `/`). Missing parent directories
    /// are added as `0755 root:root`; an explicit directory entry later overrides them.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<()> {
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|c| c.is_empty() || c == "..")
        {
            bail!("layer path {path:?} must be relative and clean");
        }
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: Kind::File(_),
                    ..
                }) => {
                    bail!("layer path {path:?}: parent {parent:?} is a file")
                }
                Some(_) => {}
                None => {
                    let dir = Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    };
                    self.entries.insert(parent.clone(), dir);
                }
            }
        }
        if let (
            Some(Entry {
                kind: Kind::Dir, ..
            }),
            Kind::File(_),
        ) = (self.entries.get(path), &entry.kind)
            && self
                .entries
                .keys()
                .any(|k| k.starts_with(&format!("{path}/")))
        {
            bail!("layer path {path:?} is a directory with children; cannot make it a file");
        }
        self.entries.insert(path.to_string(), entry);
        Ok(())
    }

    /// Render the tar (sorted by path) and gzip it. `mtime` is the time stamp of every entry.
    pub fn build(&self, mtime: u64) -> Result<Layer> {
        let tar = self.tar(mtime)?;
        let mut gz = GzBuilder::new().write(Vec::new(), Compression::new(GZIP_LEVEL));
        gz.write_all(&tar)?;
        let gz = gz.finish()?;
        Ok(Layer {
            digest: sha256_digest(&gz),
            diff_id: sha256_digest(&tar),
            gz,
        })
    }

    /// The uncompressed tar.
    pub fn tar(&self, mtime: u64) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        // First path seen with each content hash; later identical files become hard links to it.
        let mut first_with: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(entry.mode);
            h.set_uid(entry.uid);
            h.set_gid(entry.gid);
            h.set_mtime(mtime);
            // Empty user/group names: only numeric owners count.
            h.set_username("").context("tar header")?;
            h.set_groupname("").context("tar header")?;
            match &entry.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    builder.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Kind::File(data) => {
                    let key: [u8; 32] = Sha256::digest(data).into();
                    match first_with.get(&key) {
                        Some(target) if !data.is_empty() => {
                            h.set_entry_type(tar::EntryType::Link);
                            h.set_size(0);
                            builder.append_link(&mut h, path, target)?;
                        }
                        _ => {
                            first_with.insert(key, path);
                            h.set_entry_type(tar::EntryType::Regular);
                            h.set_size(data.len() as u64);
                            builder.append_data(&mut h, path, data.as_slice())?;
                        }
                    }
                }
            }
        }
        Ok(builder.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file(data: &[u8], mode: u32) -> Entry {
        Entry {
            kind: Kind::File(data.to_vec()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn sample(order: &[usize]) -> LayerBuilder {
        let items: Vec<(&str, Entry)> = vec![
            ("usr/local/bin/app", file(b"\x7fELF", 0o755)),
            (
                "tmp",
                Entry {
                    kind: Kind::Dir,
                    mode: 0o1777,
                    uid: 0,
                    gid: 0,
                },
            ),
            (
                "home/nonroot",
                Entry {
                    kind: Kind::Dir,
                    mode: 0o700,
                    uid: 65532,
                    gid: 65532,
                },
            ),
            (
                "etc/passwd",
                file(b"root:x:0:0::/root:/sbin/nologin\n", 0o644),
            ),
        ];
        let mut b = LayerBuilder::new();
        for &i in order {
            b.add(items[i].0, items[i].1.clone()).unwrap();
        }
        b
    }

    #[test]
    fn same_entries_in_any_order_give_identical_digests() {
        let a = sample(&[0, 1, 2, 3]).build(1_700_000_000).unwrap();
        let b = sample(&[3, 2, 1, 0]).build(1_700_000_000).unwrap();
        assert_eq!((a.digest.clone(), a.diff_id.clone()), (b.digest, b.diff_id));
        let c = sample(&[0, 1, 2, 3]).build(1_700_000_001).unwrap();
        assert_ne!(a.diff_id, c.diff_id, "mtime must be part of the content");
    }

    #[test]
    fn tar_is_sorted_numeric_owners_parents_explicit() {
        let tar = sample(&[0, 1, 2, 3]).tar(42).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            seen.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                h.username().unwrap().unwrap_or("").to_string(),
            ));
        }
        let paths: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/passwd",
                "home/",
                "home/nonroot/",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/app"
            ]
        );
        let nonroot = seen.iter().find(|s| s.0 == "home/nonroot/").unwrap();
        assert_eq!((nonroot.1, nonroot.2), (0o700, 65532));
        assert_eq!(seen.iter().find(|s| s.0 == "tmp/").unwrap().1, 0o1777);
        assert!(seen.iter().all(|s| s.3 == 42 && s.4.is_empty()));
    }

    #[test]
    fn gzip_round_trips_and_diff_id_is_the_tar_digest() {
        let b = sample(&[0, 1, 2, 3]);
        let layer = b.build(7).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.gz.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256_digest(&tar), layer.diff_id);
        assert_eq!(sha256_digest(&layer.gz), layer.digest);
        // gzip header: no mtime, OS = 255 (unknown), so the host does not leak in.
        assert_eq!(&layer.gz[4..8], &[0, 0, 0, 0]);
        assert_eq!(layer.gz[9], 255);
    }

    #[test]
    fn identical_files_become_hard_links() {
        let mut b = LayerBuilder::new();
        b.add("doc/a/LICENSE", file(b"same text", 0o644)).unwrap();
        b.add("doc/b/LICENSE", file(b"same text", 0o644)).unwrap();
        let tar = b.tar(0).unwrap();
        let mut ar = tar::Archive::new(tar.as_slice());
        let link = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("doc/b/LICENSE"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Link);
        assert_eq!(
            link.link_name().unwrap().unwrap().to_str(),
            Some("doc/a/LICENSE")
        );
    }

    #[test]
    fn rejects_bad_paths_and_file_parents() {
        let mut b = LayerBuilder::new();
        assert!(b.add("/abs", file(b"", 0o644)).is_err());
        assert!(b.add("a/../b", file(b"", 0o644)).is_err());
        b.add("f", file(b"x", 0o644)).unwrap();
        assert!(
            b.add("f/g", file(b"y", 0o644))
                .unwrap_err()
                .to_string()
                .contains("is a file")
        );
    }
}
