//! `cargo xtask ci`: everything CI checks, runnable on a fresh machine.
//!
//! It installs what the tests need (Debian packages when running as root, rustup targets,
//! PyPI tools into the project venv), then runs formatting, lints and the test suites. Each
//! step says what it is doing. It does not build or push release images (`build-images`).

use crate::{gen_model, pyenv};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct CiArgs {
    /// Skip installing Debian packages, rustup targets and PyPI tools.
    #[arg(long)]
    pub no_install: bool,
}

/// Debian packages the test suites use (the last eight boot an AVX-512 CPU under Bochs for
/// `server/tests/kernels_cross.sh` on hosts without one).
const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-user-static",
    "skopeo",
    "umoci",
    "docker-registry",
    "musl-tools",
    "bochs",
    "bochsbios",
    "vgabios",
    "bochs-term",
    "isolinux",
    "syslinux-common",
    "xorriso",
    "cpio",
];
/// Python packages the test suites use (pinned).
pub const PYTHON_PACKAGES: &[&str] = &[gen_model::QUICKTOK, "openai==3.57.0"];

pub fn run(args: &CiArgs) -> Result<()> {
    let started = Instant::now();
    if !args.no_install {
        step("install Debian packages", install_debian)?;
        step("install PyPI tools into the project venv", || {
            pyenv::python_with(PYTHON_PACKAGES).map(drop)
        })?;
    }
    step("rustfmt", || cargo(&["fmt", "--all", "--", "--check"]))?;
    step("clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    let vocab = gen_model::llama3_vocab_dump()?;
    // SAFETY of set_var: single-threaded at this point; children inherit it.
    unsafe {
        std::env::set_var("BITNET_LLAMA3_VOCAB", &vocab);
        // The openai-client tests must run in CI, not skip.
        std::env::set_var("BITNET_REQUIRE_OPENAI_TEST", "1");
    }
    step("tests", || {
        cargo(&["test", "--workspace", "--no-fail-fast"])
    })?;
    step("kernel variants of other CPUs under qemu and Bochs", || {
        if !args.no_install {
            run_cmd(Command::new("rustup").args(["target", "add", "aarch64-unknown-linux-musl"]))?;
        }
        let script = crate::workspace_root().join("server/tests/kernels_cross.sh");
        run_cmd(Command::new("bash").arg(script))
    })?;
    eprintln!("ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("ci: ── {name}");
    let t = Instant::now();
    f().with_context(|| format!("ci step '{name}' failed"))?;
    eprintln!("ci: ── {name}: ok ({:.1?})", t.elapsed());
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(
        Command::new(cargo)
            .args(args)
            .current_dir(crate::workspace_root()),
    )
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn install_debian() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("ci: Debian packages present: {}", DEBIAN_PACKAGES.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {0}; install them with `sudo apt-get install {0}` or rerun as root",
            missing.join(" ")
        );
    }
    eprintln!("ci: apt-get install {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
