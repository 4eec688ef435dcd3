//! `cargo xtask ci`: everything CI checks, runnable on a fresh machine.
//!
//! Its first step is the preflight of `crate::prereq` for the `ci` job: it installs what the tests
//! need (Debian packages when running as root, rustup targets and components, PyPI tools into the
//! project venv, cargo-deny) or names all that is missing at once; then it runs formatting, lints,
//! the dependency policy (`cargo deny`, deny.toml), the release workflow's lint (actionlint), the
//! checks that the generated compose files and Kubernetes manifests are up to date, the test
//! suites, and a short load run (`cargo xtask load --dev --duration 20`). Each step says what it
//! is doing. It does not build or push release images (`build-images`).
//!
//! The tests run with `--include-ignored`: plain `cargo test` skips the suites marked
//! `#[ignore = "…: run by cargo xtask ci"]` (Docker, apt, PyPI, tier builds, wall-clock
//! assertions), so that the default loop stays fast and offline; CI runs everything.

use crate::gen_model;
use crate::prereq::{self, Job};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct CiArgs {
    /// Never install anything; stop and name what is missing.
    #[arg(long)]
    pub no_install: bool,
}

pub fn run(args: &CiArgs) -> Result<()> {
    let started = Instant::now();
    step("preflight: every prerequisite of the test suites", || {
        prereq::preflight("ci", &[Job::Ci], &[], !args.no_install)
    })?;
    step("rustfmt", || cargo(&["fmt", "--all", "--", "--check"]))?;
    step("clippy", || {
        cargo(&[
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("cargo deny (deny.toml)", cargo_deny)?;
    step("release workflow lint (actionlint)", actionlint)?;
    step("compose files up to date", || {
        crate::compose::run(&crate::compose::Args {
            check: true,
            out: "compose".into(),
        })
    })?;
    step("kubernetes manifests up to date", || {
        crate::k8s::run(&crate::k8s::Args {
            check: true,
            out: "deploy/kubernetes".into(),
            profiles: "profiles".into(),
        })
    })?;
    let vocab = gen_model::llama3_vocab_dump()?;
    let qwen3_vocab = gen_model::qwen3_vocab_dump()?;
    // SAFETY of set_var: single-threaded at this point; children inherit it.
    unsafe {
        std::env::set_var("BITNET_LLAMA3_VOCAB", &vocab);
        // The Qwen3 tokenizer reference tests (crates/tokenizer/tests/embedding_tokenizers.rs).
        std::env::set_var("BITNET_QWEN3_VOCAB", &qwen3_vocab);
        // The openai-client tests must run in CI, not skip.
        std::env::set_var("BITNET_REQUIRE_OPENAI_TEST", "1");
        // So are the compose tests (Docker and docker-compose are CI prerequisites).
        std::env::set_var("BITNET_REQUIRE_COMPOSE_TEST", "1");
        // And the schema validation of the Kubernetes manifests (the preflight installs it).
        std::env::set_var("BITNET_REQUIRE_K8S_VALIDATE", "1");
    }
    step("tests", || {
        cargo(&[
            "test",
            "--workspace",
            "--locked",
            "--no-fail-fast",
            "--",
            "--include-ignored",
        ])
    })?;
    step(
        "load run: 20 s of 64 clients against the debug server",
        || {
            crate::load::run(&crate::load::LoadArgs {
                duration: 20,
                warmup: 5,
                connections: 64,
                max_rss_growth: 10.0,
                // The binary the tests above built: no release build in CI's budget.
                dev: true,
                model: None,
            })
        },
    )?;
    step("kernel variants of other CPUs under qemu and Bochs", || {
        let script = crate::workspace_root().join("crates/kernels/tests/kernels_cross.sh");
        run_cmd(Command::new("bash").arg(script))
    })?;
    eprintln!("ci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Licences, sources and bans always; advisories only when the RustSec database (a GitHub
/// repository) can be fetched, and then strictly. When it cannot, the step says so loudly: the
/// advisories were not checked, not found clean.
fn cargo_deny() -> Result<()> {
    let check = ["deny", "--locked", "check", "--hide-inclusion-graph"];
    cargo(&[&check[..], &["bans", "licenses", "sources"]].concat())?;
    if cargo(&["deny", "--locked", "fetch", "db"]).is_err() {
        eprintln!(
            "ci: cargo deny: advisories NOT CHECKED: the RustSec advisory database cannot be \
             fetched from this machine (see the error above)"
        );
        return Ok(());
    }
    let offline = [
        "deny",
        "--offline",
        "check",
        "--hide-inclusion-graph",
        "advisories",
    ];
    cargo(&offline)
}

/// The release workflow through actionlint (from the project venv; the preflight installs it).
/// With `shellcheck` on the PATH (also a CI prerequisite) actionlint checks the `run:` scripts too.
fn actionlint() -> Result<()> {
    let exe = crate::pyenv::venv_dir().join("bin/actionlint");
    run_cmd(
        Command::new(exe)
            .arg("ci/release.yml")
            .current_dir(crate::workspace_root()),
    )
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
