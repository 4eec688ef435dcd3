//! Runs the per-tier `cargo build`s: several tiers at once when the cores allow, progress bars on a
//! terminal (indicatif) and plain log lines otherwise, a log file per tier, and a stamp so an
//! unchanged tier is skipped without starting cargo. Reads cargo's JSON messages to find the
//! binary and the packages compiled *for the target* (for the SBOM). It does NOT choose flags or
//! environment (see `plan`).

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fingerprint::{read_stamp, write_stamp};

/// One tier's build, fully decided.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tier name.
    pub tier: String,
    /// Target triple.
    pub target: String,
    /// `cargo build …` arguments (after `cargo`).
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Environment variables to remove.
    pub env_remove: Vec<String>,
    /// The binary target name.
    pub bin: String,
    /// Fingerprint of every input.
    pub fingerprint: String,
    /// Stamp file.
    pub stamp: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// Rebuild even if the stamp matches.
    pub force: bool,
}

/// The result of one tier's build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The stripped static binary.
    pub binary: PathBuf,
    /// Its sha256 (hex).
    pub binary_sha256: String,
    /// Cargo package ids compiled for the target (not build scripts or proc-macros).
    pub compiled: BTreeSet<String>,
    /// True if skipped (stamp matched).
    pub skipped: bool,
    /// Wall time of the build (0 if skipped).
    pub seconds: f64,
    /// The build fingerprint.
    pub fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    fingerprint: String,
    binary: PathBuf,
    binary_sha256: String,
    compiled: BTreeSet<String>,
    artifacts: u64,
}

/// Progress output: bars on a terminal, lines otherwise.
pub enum Progress {
    /// indicatif bars.
    Tty(MultiProgress),
    /// `build-images: [tier] …` lines on stderr.
    Plain,
}

impl Progress {
    /// Bars if stderr is a terminal.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Tty(MultiProgress::new())
        } else {
            Progress::Plain
        }
    }

    /// Print a line without breaking the bars.
    pub fn line(&self, msg: &str) {
        match self {
            Progress::Tty(m) => {
                let _ = m.println(format!("build-images: {msg}"));
            }
            Progress::Plain => eprintln!("build-images: {msg}"),
        }
    }
}

struct TierBar<'a> {
    progress: &'a Progress,
    bar: Option<ProgressBar>,
    tier: String,
    done: u64,
    expected: u64,
}

impl<'a> TierBar<'a> {
    fn new(progress: &'a Progress, tier: &str, expected: u64) -> Self {
        let bar = match progress {
            Progress::Tty(m) => {
                let bar = m.add(if expected > 0 {
                    ProgressBar::new(expected)
                } else {
                    ProgressBar::no_length()
                });
                let style = ProgressStyle::with_template(
                    "{prefix:>12.bold} [{bar:30}] {pos}/{len} {elapsed:>4} {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(tier.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            Progress::Plain => {
                eprintln!("build-images: [{tier}] cargo build started");
                None
            }
        };
        TierBar {
            progress,
            bar,
            tier: tier.to_string(),
            done: 0,
            expected,
        }
    }

    fn artifact(&mut self, name: &str) {
        self.done += 1;
        match &self.bar {
            Some(b) => {
                if self.done > self.expected {
                    self.expected = self.done;
                    b.set_length(self.done);
                }
                b.set_position(self.done);
                b.set_message(name.to_string());
            }
            None if self.done.is_multiple_of(25) => {
                eprintln!(
                    "build-images: [{}] {} crates compiled (last: {name})",
                    self.tier, self.done
                )
            }
            None => {}
        }
    }

    fn finish(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(msg.to_string()),
            None => self.progress.line(&format!("[{}] {msg}", self.tier)),
        }
    }
}

fn sha256_file(path: &PathBuf) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A stamp-matching previous build, if still valid.
fn reuse(plan: &Plan) -> Option<Built> {
    if plan.force {
        return None;
    }
    let stamp: Stamp = read_stamp(&plan.stamp)?;
    if stamp.fingerprint != plan.fingerprint {
        return None;
    }
    let sha = sha256_file(&stamp.binary).ok()?;
    (sha == stamp.binary_sha256).then(|| Built {
        binary: stamp.binary,
        binary_sha256: sha,
        compiled: stamp.compiled,
        skipped: true,
        seconds: 0.0,
        fingerprint: plan.fingerprint.clone(),
    })
}

/// Build every plan, `parallel` at a time. Returns results in plan order.
pub fn build_all(plans: &[Plan], parallel: usize, progress: &Progress) -> Result<Vec<Built>> {
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..plans.len()).collect());
    let results: Mutex<Vec<Option<Result<Built>>>> =
        Mutex::new((0..plans.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                    let Some(i) = next else { break };
                    let r = build_one(&plans[i], progress);
                    if let Ok(mut res) = results.lock() {
                        res[i] = Some(r);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a build thread panicked"))?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (plan, r) in plans.iter().zip(results) {
        match r {
            Some(Ok(b)) => out.push(b),
            Some(Err(e)) => errors.push(format!("{}: {e:#}", plan.tier)),
            None => errors.push(format!("{}: not built", plan.tier)),
        }
    }
    if !errors.is_empty() {
        bail!("tier build failed:\n{}", errors.join("\n"));
    }
    Ok(out)
}

fn build_one(plan: &Plan, progress: &Progress) -> Result<Built> {
    if let Some(b) = reuse(plan) {
        progress.line(&format!("[{}] unchanged, build skipped", plan.tier));
        return Ok(b);
    }
    let start = Instant::now();
    let expected = read_stamp::<Stamp>(&plan.stamp)
        .map(|s| s.artifacts)
        .unwrap_or(0);
    let mut bar = TierBar::new(progress, &plan.tier, expected);
    if let Some(dir) = plan.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = std::fs::File::create(&plan.log)
        .with_context(|| format!("cannot create {}", plan.log.display()))?;
    writeln!(log, "$ cargo {}", plan.args.join(" "))?;
    for (k, v) in &plan.env {
        writeln!(log, "  {k}={v}")?;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(&plan.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    for k in &plan.env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(plan.env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().context("cannot start cargo")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;

    let log = Mutex::new(log);
    let tail: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
    let triple_dir = format!("/{}/", plan.target);
    let mut compiled = BTreeSet::new();
    let mut binary: Option<PathBuf> = None;
    let mut artifacts = 0u64;
    std::thread::scope(|s| -> Result<()> {
        s.spawn(|| {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Ok(mut l) = log.lock() {
                    let _ = writeln!(l, "{line}");
                }
                if let Ok(mut t) = tail.lock() {
                    t.push_back(line);
                    if t.len() > 60 {
                        t.pop_front();
                    }
                }
            }
        });
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            artifacts += 1;
            let name = msg["target"]["name"].as_str().unwrap_or("?");
            bar.artifact(name);
            let kinds: Vec<&str> = msg["target"]["kind"]
                .as_array()
                .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
                .unwrap_or_default();
            let for_target = msg["filenames"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|p| p.as_str().is_some_and(|p| p.contains(&triple_dir)))
            });
            if for_target
                && !kinds.contains(&"custom-build")
                && let Some(id) = msg["package_id"].as_str()
            {
                compiled.insert(id.to_string());
            }
            if kinds.contains(&"bin") && name == plan.bin {
                binary = msg["executable"].as_str().map(PathBuf::from);
            }
        }
        Ok(())
    })?;
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bar.finish("FAILED");
        let tail: Vec<String> = tail.into_inner().unwrap_or_default().into_iter().collect();
        bail!(
            "cargo build failed ({status}) after {secs:.0} s; full log: {}\n{}",
            plan.log.display(),
            tail.join("\n")
        );
    }
    let binary = binary.with_context(|| {
        format!(
            "cargo reported no `{}` executable; see {}",
            plan.bin,
            plan.log.display()
        )
    })?;
    let binary_sha256 = sha256_file(&binary)?;
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    bar.finish(&format!(
        "built in {secs:.0} s ({:.1} MB)",
        size as f64 / 1e6
    ));
    write_stamp(
        &plan.stamp,
        &Stamp {
            fingerprint: plan.fingerprint.clone(),
            binary: binary.clone(),
            binary_sha256: binary_sha256.clone(),
            compiled: compiled.clone(),
            artifacts,
        },
    )?;
    Ok(Built {
        binary,
        binary_sha256,
        compiled,
        skipped: false,
        seconds: secs,
        fingerprint: plan.fingerprint.clone(),
    })
}
