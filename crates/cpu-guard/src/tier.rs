//! The shape of the tier description that `build.rs` bakes into the binary (`$OUT_DIR/cpu_tier.rs`).
//! Plain data shared by the library and the baseline guard object; no logic here.

/// The CPU tier a binary was built for.
#[derive(Debug)]
pub struct BuildTier {
    /// Tier name, e.g. `x86-64-v3`; `unlabelled` for builds not made by `cargo xtask build-images`.
    pub name: &'static str,
    /// Image tag suffix of this tier, e.g. `amd64-v3` (empty if unlabelled).
    pub suffix: &'static str,
    /// Image reference without the suffix, e.g. `bitnet-server:0.1.0` (empty if unlabelled).
    pub image: &'static str,
    /// Features the tier's profile declares (mask over this architecture's feature table).
    pub declared: u64,
    /// Features the guard checks: `declared` plus everything the compiler was allowed to use.
    pub required: u64,
    /// The published tiers of this architecture, best first (for the fallback suggestion).
    pub ladder: &'static [Rung],
}

/// One published tier of the same architecture.
#[derive(Debug)]
pub struct Rung {
    /// Tier name, e.g. `x86-64-v2`.
    pub name: &'static str,
    /// Image tag suffix, e.g. `amd64-v2`.
    pub suffix: &'static str,
    /// Its required features (mask over this architecture's feature table).
    pub required: u64,
}
