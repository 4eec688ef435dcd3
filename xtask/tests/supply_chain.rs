//! Supply-chain rules over the tree (issue 16): every cargo call in CI and the xtask uses
//! `--locked`, and the release workflow (`ci/release.yml`) pins its actions by commit digest and
//! never pastes a `${{ … }}` expression into a shell script. Plain text checks, no network.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `cargo <sub>` in a shell line or a workflow `run:` (not `cargo xtask`: the alias is locked).
fn unlocked_shell_calls(rel: &str) -> Vec<String> {
    read(rel)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter(|(_, l)| {
            [
                "build", "test", "run", "clippy", "install", "metadata", "check",
            ]
            .iter()
            .any(|sub| l.contains(&format!("cargo {sub}")))
        })
        .filter(|(_, l)| !l.contains("--locked"))
        .map(|(i, l)| format!("{rel}:{}: {}", i + 1, l.trim()))
        .collect()
}

#[test]
fn every_cargo_call_in_ci_and_the_xtask_is_locked() {
    let mut bad = Vec::new();
    // `cargo xtask …` (.ci/run, the release workflow, fresh-check) goes through the alias.
    let alias = read(".cargo/config.toml");
    if !alias
        .lines()
        .any(|l| l.starts_with("xtask =") && l.contains("run --locked"))
    {
        bad.push(".cargo/config.toml: the xtask alias lacks --locked".to_string());
    }
    bad.extend(unlocked_shell_calls("ci/release.yml"));
    bad.extend(unlocked_shell_calls(".ci/run"));
    for e in std::fs::read_dir(root().join("server/tests"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sh") {
            bad.extend(unlocked_shell_calls(&format!("server/tests/{name}")));
        }
    }
    // The xtask's own cargo calls: a file that runs cargo says `--locked` (ci.rs: clippy and
    // test; cargo fmt resolves nothing and has no such flag). The tier builds (cargo_build.rs)
    // take their arguments from plan.rs, checked below.
    let mut files = Vec::new();
    rust_files(&root().join("xtask/src"), &mut files);
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        if text.contains("Command::new(cargo")
            && !text.contains("\"--locked\"")
            && !rel.ends_with("images/cargo_build.rs")
        {
            bad.push(format!("{rel}: runs cargo without --locked"));
        }
    }
    let plan = read("xtask/src/images/plan.rs");
    if !plan.contains("\"--locked\"") {
        bad.push("xtask/src/images/plan.rs: the tier builds lack --locked".into());
    }
    assert!(
        bad.is_empty(),
        "cargo calls without --locked:\n{}",
        bad.join("\n")
    );
}

#[test]
fn release_workflow_pins_actions_by_digest_and_keeps_expressions_out_of_scripts() {
    let wf = read("ci/release.yml");
    let mut bad = Vec::new();
    let lines: Vec<&str> = wf.lines().collect();
    let mut uses = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(action) = t.strip_prefix("uses:") {
            uses += 1;
            let action = action.split('#').next().unwrap().trim();
            let pinned = action.split_once('@').is_some_and(|(_, r)| {
                r.len() == 40
                    && r.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            });
            if !pinned || !t.contains("# v") {
                bad.push(format!(
                    "line {}: `{action}` is not pinned by a full commit digest with its tag in a comment",
                    i + 1
                ));
            }
        }
        if let Some(rest) = t.strip_prefix("run:") {
            // The script: the inline value, or the block below it (deeper indentation).
            let indent = line.len() - line.trim_start().len();
            let mut script = vec![(i, rest)];
            let mut j = i + 1;
            while j < lines.len()
                && (lines[j].trim().is_empty()
                    || lines[j].len() - lines[j].trim_start().len() > indent)
            {
                script.push((j, lines[j]));
                j += 1;
            }
            for (n, l) in script {
                if l.contains("${{") {
                    bad.push(format!(
                        "line {}: a `${{{{ … }}}}` expression inside a run script (pass it through env:)",
                        n + 1
                    ));
                }
            }
            i = j;
            continue;
        }
        i += 1;
    }
    assert!(
        uses >= 2,
        "no `uses:` lines found: the check is reading the wrong file"
    );
    if !wf.contains("INPUT_VERSION: ${{ github.event.inputs.version }}") {
        bad.push("the version input is not passed through env:".into());
    }
    assert!(bad.is_empty(), "ci/release.yml:\n{}", bad.join("\n"));
}

/// The workflow's version check, run by bash on good and hostile values: a second line (which
/// written to GITHUB_ENV would set any variable) or shell syntax must be refused.
#[test]
fn release_workflow_version_check_accepts_only_a_version() {
    let wf = read("ci/release.yml");
    let line = wf
        .lines()
        .find(|l| l.contains("[[ \"$v\" =~ "))
        .expect("ci/release.yml: the version step has no `[[ \"$v\" =~ … ]]` check");
    let re = line
        .split("=~ ")
        .nth(1)
        .unwrap()
        .split(" ]]")
        .next()
        .unwrap();
    let accepts = |v: &str| {
        std::process::Command::new("bash")
            .args(["-c", "re=$1; [[ $2 =~ $re ]]", "_", re, v])
            .status()
            .unwrap()
            .success()
    };
    for good in ["1.2.3", "0.1.0", "1.2.3-rc.1"] {
        assert!(accepts(good), "{good:?} refused by {re}");
    }
    for bad in [
        "1.2.3\nBASH_ENV=/tmp/x",
        "1.2.3; curl x | sh",
        "$(id)",
        "v1.2.3",
        "1.2",
        "",
    ] {
        assert!(!accepts(bad), "{bad:?} accepted by {re}");
    }
}

/// `[[package]]` entries of a Cargo.lock: (name, version) → (source, dependencies).
fn lock_packages(
    rel: &str,
) -> std::collections::BTreeMap<(String, String), (Option<String>, Vec<String>)> {
    let lock: toml::Value = toml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let s = |p: &toml::Value, k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p
                .get("dependencies")
                .and_then(|d| d.as_array())
                .map(|d| {
                    d.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (
                (s(p, "name").unwrap(), s(p, "version").unwrap()),
                (s(p, "source"), deps),
            )
        })
        .collect()
}

/// The fuzz crate (`fuzz/`, its own workspace, docs/fuzzing.md) has its own lock file, which
/// drifts whenever the workspace's dependencies change. It must fuzz what ships: every package
/// in it at a version the workspace's lock has (the fuzzing tools aside), and every workspace
/// crate with no dependency the workspace's lock does not give it. The fix when this fails:
/// `cp Cargo.lock fuzz/Cargo.lock && cargo metadata --manifest-path fuzz/Cargo.toml
/// --format-version 1 > /dev/null`, which adds only the fuzzing tools.
#[test]
fn the_fuzz_lock_file_agrees_with_the_workspace_lock() {
    let main = lock_packages("Cargo.lock");
    let fuzz = lock_packages("fuzz/Cargo.lock");
    const FUZZ_TOOLS: [&str; 4] = [
        "bitnet-fuzz-targets",
        "libfuzzer-sys",
        "arbitrary",
        "jobserver",
    ];
    let mut problems = Vec::new();
    for ((name, version), (source, deps)) in &fuzz {
        match main.get(&(name.clone(), version.clone())) {
            None if FUZZ_TOOLS.contains(&name.as_str()) => {}
            None => problems.push(format!("{name} {version} is not in the workspace's lock")),
            Some((None, d)) if source.is_none() => {
                let extra: Vec<_> = deps.iter().filter(|x| !d.contains(x)).collect();
                if !extra.is_empty() {
                    problems.push(format!(
                        "workspace crate {name} depends here on {extra:?}, in the workspace not"
                    ));
                }
            }
            Some(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "fuzz/Cargo.lock is out of step with Cargo.lock (fix: see this test's doc):\n{}",
        problems.join("\n")
    );
}

/// And cargo itself agrees that the fuzz lock file is complete: `cargo xtask fuzz` checks it
/// with `cargo metadata --locked` before building (cargo-fuzz has no `--locked`), so a stale one
/// fails there, not silently re-resolved.
#[test]
#[ignore = "may fetch the fuzzing tools' sources from crates.io: run by cargo xtask ci"]
fn cargo_finds_the_fuzz_lock_file_up_to_date() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(root().join("fuzz/Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fuzz/Cargo.lock is out of date (fix: see the_fuzz_lock_file_agrees_with_the_workspace_lock): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
