//! `cargo xtask`: the project's automation (images, compose files, synthetic models, CI).

mod pyenv;

use std::path::PathBuf;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn main() -> anyhow::Result<()> {
    let _ = pyenv::python_with;
    anyhow::bail!("no xtask commands yet")
}
