//! `cargo xtask fuzz [TARGET…] [--seconds N]`: runs the cargo-fuzz targets of `fuzz/` one after
//! another, each for N seconds, and prints libFuzzer's totals per target (executions, coverage,
//! corpus size). `--cmin` then minimizes each corpus in place, ready to commit.
//!
//! It works on the stable toolchain: cargo-fuzz asks for nightly-only rustc flags, which
//! `RUSTC_BOOTSTRAP=1` allows for this build only. The default sanitizer is none (the code under
//! test is safe Rust; no instrumentation but coverage means more executions per second on a
//! shared machine); `--sanitizer address` adds ASan. The build goes to `target/fuzz`, the
//! workspace's own target directory. What the targets check: `crates/fuzz` (docs/fuzzing.md).
//!
//! cargo-fuzz has no `--locked`; `fuzz/Cargo.lock` is held to its contents by a
//! `cargo metadata --locked` of the fuzz crate first, so the build resolves nothing new.

use crate::ci::run_cmd;
use crate::workspace_root;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Targets to run (default: every target of `cargo fuzz list`, one at a time).
    pub targets: Vec<String>,
    /// Seconds per target (libFuzzer's `-max_total_time`).
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// `none` or `address` (cargo fuzz `--sanitizer`).
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
    /// Minimize each target's corpus afterwards (`cargo fuzz cmin`), in place.
    #[arg(long)]
    pub cmin: bool,
    /// Never install cargo-fuzz; stop and name what is missing.
    #[arg(long)]
    pub no_install: bool,
}

/// libFuzzer's totals for one run.
#[derive(Debug, Default)]
struct Totals {
    /// The final `#N DONE cov: … ft: … corp: … exec/s: … rss: …` line.
    done: Option<String>,
    /// `stat::number_of_executed_units`.
    execs: Option<u64>,
    /// The fuzzing time alone, from `Done N runs in S second(s)` (the build not counted).
    seconds: Option<u64>,
}

impl Totals {
    /// Keep what one line of libFuzzer's output says of the totals.
    fn read(&mut self, line: &str) {
        // `#351524\tDONE   cov: …` (a tab after the count).
        if line.split_whitespace().nth(1) == Some("DONE") {
            self.done = Some(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        if let Some(rest) = line.strip_prefix("Done ") {
            self.seconds = rest
                .split_once(" runs in ")
                .and_then(|(_, t)| t.split_whitespace().next()?.parse().ok());
        }
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.execs = n.trim().parse().ok();
        }
    }
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    if !["none", "address"].contains(&args.sanitizer.as_str()) {
        bail!(
            "--sanitizer {} is not supported here; use none or address",
            args.sanitizer
        );
    }
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(
        Command::new(&cargo)
            .args([
                "metadata",
                "--locked",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(fuzz_dir.join("Cargo.toml"))
            .stdout(Stdio::null()),
    )
    .context("fuzz/Cargo.lock is out of date with fuzz/Cargo.toml")?;
    let all = list_targets(&cargo)?;
    let targets = if args.targets.is_empty() {
        all.clone()
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    let target_dir = root.join("target").join("fuzz");
    let mut summary = Vec::new();
    for target in &targets {
        eprintln!("fuzz: ── {target}: {} s", args.seconds);
        let started = Instant::now();
        let mut cmd = cargo_fuzz(&cargo, "run", target, &args.sanitizer, &target_dir);
        cmd.args([
            "--".to_string(),
            format!("-max_total_time={}", args.seconds),
            "-print_final_stats=1".into(),
            "-timeout=10".into(),
        ]);
        let totals = run_libfuzzer(&mut cmd, target)?;
        let unknown = || "?".to_string();
        let line = format!(
            "{target}: {} executions in {} s of fuzzing ({:.0?} with the build); {}",
            totals.execs.map_or_else(unknown, |n| n.to_string()),
            totals.seconds.map_or_else(unknown, |n| n.to_string()),
            started.elapsed(),
            totals.done.as_deref().unwrap_or("no DONE line")
        );
        eprintln!("fuzz: {line}");
        summary.push(line);
        if args.cmin {
            eprintln!("fuzz: ── {target}: cmin");
            // Every edge kept once by a greedy set cover, hit counts ignored: a corpus of a few
            // hundred inputs instead of thousands.
            run_cmd(
                cargo_fuzz(&cargo, "cmin", target, &args.sanitizer, &target_dir).args([
                    "--",
                    "-use_counters=0",
                    "-set_cover_merge=1",
                ]),
            )?;
        }
    }
    eprintln!("fuzz: summary");
    for line in summary {
        eprintln!("  {line}");
    }
    Ok(())
}

fn list_targets(cargo: &str) -> Result<Vec<String>> {
    let out = Command::new(cargo)
        .args(["fuzz", "list"])
        .current_dir(workspace_root())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!(
            "cargo fuzz list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// `cargo fuzz <sub> <target>` on the stable toolchain, building into `target/fuzz`.
fn cargo_fuzz(
    cargo: &str,
    sub: &str,
    target: &str,
    sanitizer: &str,
    target_dir: &std::path::Path,
) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "fuzz",
        sub,
        target,
        "--sanitizer",
        sanitizer,
        "--target-dir",
    ])
    .arg(target_dir)
    .env("RUSTC_BOOTSTRAP", "1")
    .current_dir(workspace_root());
    cmd
}

/// Runs libFuzzer with its output passed through, keeping the totals it prints at the end.
fn run_libfuzzer(cmd: &mut Command, target: &str) -> Result<Totals> {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut totals = Totals::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading libFuzzer's output")?;
        eprintln!("{line}");
        totals.read(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "fuzz target {target} failed ({status}): the crash input is under \
             fuzz/artifacts/{target}/; fix the product, then commit the input to \
             fuzz/regressions/{target}/ (docs/fuzzing.md)"
        );
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::Totals;

    /// The last lines of a real `cargo xtask fuzz gguf` run (libFuzzer, -print_final_stats=1).
    #[test]
    fn totals_are_read_from_libfuzzers_last_lines() {
        let mut t = Totals::default();
        for line in [
            "#351524\tDONE   cov: 3580 ft: 6097 corp: 358/8672Kb lim: 69408 exec/s: 584 rss: 69Mb",
            "Done 351524 runs in 601 second(s)",
            "stat::number_of_executed_units: 351524",
            "stat::average_exec_per_sec:     584",
        ] {
            t.read(line);
        }
        assert_eq!(t.execs, Some(351_524));
        assert_eq!(t.seconds, Some(601));
        assert_eq!(
            t.done.as_deref(),
            Some(
                "#351524 DONE cov: 3580 ft: 6097 corp: 358/8672Kb lim: 69408 exec/s: 584 rss: 69Mb"
            )
        );
    }
}
