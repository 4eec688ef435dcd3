//! The guard's message: which features are missing and which image tag to use instead.
//! `no_std`, allocation-free and panic-free (it is compiled into the baseline guard object, where
//! nothing may reference core's panic machinery). It does NOT read the CPU or write anywhere.

use super::tier::{BuildTier, Rung};

/// A fixed-capacity byte sink; text beyond the capacity is dropped.
pub struct Buf<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl<'a> Buf<'a> {
    /// Wrap a buffer.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Buf { bytes, len: 0 }
    }

    /// Append `s` (truncated at capacity).
    pub fn put(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    /// How many bytes were written so far.
    pub fn written(&self) -> usize {
        self.len
    }
}

fn has(mask: u64, i: usize) -> bool {
    mask & 1u64.checked_shl(i as u32).unwrap_or(0) != 0
}

/// The best rung (first in the ladder) whose features the host has, other than the tier `own`
/// itself (its rung may declare less than the build really needs), if any.
pub fn fallback(ladder: &'static [Rung], own: &str, host: u64) -> Option<&'static Rung> {
    ladder
        .iter()
        .find(|rung| rung.suffix != own && rung.required & !host == 0)
}

/// Render the report for `tier` on a host with feature mask `host`, missing `missing`;
/// `names` is the feature table of this architecture.
pub fn render(out: &mut Buf<'_>, names: &[&str], tier: &BuildTier, missing: u64, host: u64) {
    out.put("bitnet-server: this CPU cannot run the ");
    out.put(tier.name);
    out.put(" build");
    if !tier.image.is_empty() {
        out.put(" (image ");
        out.put(tier.image);
        out.put("-");
        out.put(tier.suffix);
        out.put(")");
    }
    out.put(".\nbitnet-server: missing CPU features:");
    for (i, name) in names.iter().enumerate() {
        if has(missing, i) {
            out.put(" ");
            out.put(name);
        }
    }
    out.put("\n");
    match fallback(tier.ladder, tier.suffix, host) {
        Some(rung) if !tier.image.is_empty() => {
            out.put("bitnet-server: use the image ");
            out.put(tier.image);
            out.put("-");
            out.put(rung.suffix);
            out.put(" (");
            out.put(rung.name);
            out.put(
                " build) instead; Docker >= 23 picks it by itself from the multi-platform tag ",
            );
            out.put(tier.image);
            out.put(".\n");
        }
        _ if tier.ladder.is_empty() => {
            out.put("bitnet-server: rebuild without the -C target-cpu/target-feature flags ");
            out.put("this CPU lacks.\n");
        }
        _ => {
            out.put("bitnet-server: none of the published tiers (");
            for (i, rung) in tier.ladder.iter().enumerate() {
                if i > 0 {
                    out.put(", ");
                }
                out.put(rung.name);
            }
            out.put(") runs on this CPU.\n");
        }
    }
    out.put("bitnet-server: exiting with status 78 (CPU not supported by this build).\n");
}
