//! A project-local Python virtual environment for the tools we borrow from PyPI.
//!
//! Reference tokenizers, the Hugging Face reference model, llama.cpp's Python bindings and the
//! `openai` client all come from PyPI. They live in one venv under `target/pyenv` so a fresh
//! machine needs nothing but `python3`, and nothing is installed system-wide.
//!
//! This module does not pin or resolve versions itself: callers name the requirement strings.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the venv lives: `$BITNET_PYENV` or `<workspace>/target/pyenv`.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BITNET_PYENV") {
        return PathBuf::from(dir);
    }
    crate::workspace_root().join("target").join("pyenv")
}

/// The venv's interpreter, creating the venv and installing `requirements` if any is missing.
pub fn python_with(requirements: &[&str]) -> Result<PathBuf> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    if !python.exists() {
        eprintln!("xtask: creating Python venv at {}", dir.display());
        let host = find_host_python()?;
        run(Command::new(&host).args(["-m", "venv"]).arg(&dir))
            .with_context(|| format!("creating a venv with {}", host.display()))?;
    }
    let missing: Vec<&str> = requirements
        .iter()
        .copied()
        .filter(|req| !is_installed(&python, req))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "xtask: pip install {} (into {})",
            missing.join(" "),
            dir.display()
        );
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(&missing))
        .with_context(|| format!("installing {} from PyPI", missing.join(" ")))?;
    }
    Ok(python)
}

/// `name==1.2` / `name>=1` / `name` → is a distribution called `name` installed?
fn is_installed(python: &Path, requirement: &str) -> bool {
    version_in(python, requirement).is_some()
}

/// The installed version of `requirement`'s distribution in the project venv, if the venv exists
/// and has it (at the pinned version, for `name==version`).
pub fn installed_version(requirement: &str) -> Option<String> {
    let python = venv_dir().join("bin").join("python");
    python.exists().then(|| version_in(&python, requirement))?
}

fn version_in(python: &Path, requirement: &str) -> Option<String> {
    let name = requirement
        .split(|c: char| "=<>!~[; ".contains(c))
        .next()
        .unwrap_or(requirement);
    let out = Command::new(python)
        .args(["-m", "pip", "show", name])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))?
        .trim()
        .to_string();
    match requirement.split_once("==") {
        Some((_, pinned)) if pinned.trim() != version => None,
        _ => Some(version),
    }
}

fn find_host_python() -> Result<PathBuf> {
    for cand in ["python3", "python"] {
        if Command::new(cand)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(PathBuf::from(cand));
        }
    }
    bail!(
        "no python3 found on PATH; install Python 3.9+ (Debian: apt-get install python3 python3-venv)"
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
