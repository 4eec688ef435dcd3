//! `cargo xtask fresh-check`: the README's first command on a fresh machine, rerunnable by anyone.
//!
//! 1. A Debian 12 root filesystem from `debootstrap --variant=minbase`, with only what the README
//!    asks of a user besides Rust and Docker: git, the C toolchain rustup needs to link
//!    (`build-essential`) and CA certificates. Cached under `target/fresh/`, imported into Docker
//!    as `bitnet-fresh:bookworm`.
//! 2. The host's default rustup toolchain, copied with its host target only (what a fresh
//!    `rustup` install has), and an empty `CARGO_HOME`: crates come from the registry again.
//! 3. A fresh `git clone` of the committed HEAD.
//! 4. A container of that image with the run directory mounted at the same path (so that paths
//!    handed to the Docker daemon mean the same inside and out), the Docker socket, and the host's
//!    CA bundle (for a TLS-intercepting proxy; `--no-host-ca` leaves it out). In it, one
//!    `docker exec` per step, timed, with the Debian packages, rustup targets and PyPI packages each
//!    step added: `cargo xtask build-images --load`, `gen-model --preset tiny`, `doctor --install
//!    ci` (the ci preflight), then `doctor ci` (must find nothing missing).
//! 5. On the host, the image that step 4 loaded runs read-only as in the README, with the tiny
//!    model, until `/health` says ready.
//!
//! The container and the test image's container are removed at the end, pass or fail; the run
//! directory (several GB) is removed after a pass unless `--keep`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::ci::run_cmd;
use crate::workspace_root;

/// `cargo xtask fresh-check`.
#[derive(clap::Args, Debug)]
pub struct FreshArgs {
    /// Debian mirror for debootstrap and apt inside the container.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    pub mirror: String,
    /// Make the root filesystem again even if a cached one exists.
    #[arg(long)]
    pub rebuild_rootfs: bool,
    /// Do not pass the host's CA bundle (SSL_CERT_FILE) into the container.
    #[arg(long)]
    pub no_host_ca: bool,
    /// Keep the run directory (clone, toolchain copy, build outputs) after a pass.
    #[arg(long)]
    pub keep: bool,
    /// Never install the harness's own prerequisites (debootstrap) on the host.
    #[arg(long)]
    pub no_install: bool,
}

const IMAGE: &str = "bitnet-fresh:bookworm";
/// What the README asks a user to have besides Rust and Docker.
const INCLUDE: &str = "ca-certificates,git,build-essential";

fn say(msg: &str) {
    eprintln!("fresh-check: {msg}");
}

/// Run the whole check.
pub fn run(args: &FreshArgs) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let base = root.join("target/fresh");
    std::fs::create_dir_all(&base)?;
    if !git(&root, &["status", "--porcelain"])?.trim().is_empty() {
        say("note: the work tree has uncommitted changes; the check clones the committed HEAD");
    }
    let mut times: Vec<(String, Duration, String)> = Vec::new();

    let t = Instant::now();
    rootfs_image(&base, args)?;
    times.push((
        "root filesystem + docker import".into(),
        t.elapsed(),
        String::new(),
    ));

    let run_dir = base.join(format!("run-{}", std::process::id()));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    std::fs::create_dir_all(run_dir.join("models"))?;
    let t = Instant::now();
    let toolchain = copy_toolchain(&run_dir)?;
    let src = run_dir.join("src");
    run_cmd(
        Command::new("git")
            .args(["clone", "--quiet", "--no-local"])
            .arg(&root)
            .arg(&src),
    )?;
    // What was cloned (HEAD may move while the check runs).
    let head = git(&src, &["rev-parse", "--short", "HEAD"])?
        .trim()
        .to_string();
    times.push((
        format!("toolchain copy ({toolchain}) + clone of {head}"),
        t.elapsed(),
        String::new(),
    ));

    let name = format!("bitnet-fresh-{}", std::process::id());
    let container = Container::start(&name, &run_dir, &src, args)?;
    let model = run_dir.join("models/model.gguf");
    let model_arg = model.to_string_lossy().into_owned();
    let steps: [(&str, Vec<&str>); 4] = [
        ("build-images --load", vec!["build-images", "--load"]),
        (
            "gen-model --preset tiny",
            vec!["gen-model", "--preset", "tiny", "--out", &model_arg],
        ),
        ("doctor --install ci", vec!["doctor", "--install", "ci"]),
        ("doctor ci", vec!["doctor", "ci"]),
    ];
    for (label, xtask_args) in steps {
        let before = container.snapshot()?;
        say(&format!("── cargo xtask {label}"));
        let t = Instant::now();
        let mut cmd = vec!["cargo", "xtask"];
        cmd.extend(xtask_args);
        container
            .exec(&cmd)
            .with_context(|| format!("`cargo xtask {label}` failed on the fresh machine"))?;
        let took = t.elapsed();
        let added = container.snapshot()?.added_since(&before);
        say(&format!(
            "── cargo xtask {label}: ok in {:.0} s; installed: {added}",
            took.as_secs_f64()
        ));
        times.push((format!("cargo xtask {label}"), took, added));
    }
    drop(container);

    let t = Instant::now();
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(src.join("target/images/summary.json"))
            .context("the fresh build wrote no target/images/summary.json")?,
    )?;
    let tag = format!(
        "{}:{}",
        summary["name"].as_str().unwrap_or("bitnet-server"),
        summary["version"].as_str().unwrap_or_default()
    );
    let reply = serve_health(&tag, &summary, &run_dir.join("models"))?;
    times.push((
        format!("docker run {tag}: /health"),
        t.elapsed(),
        reply.clone(),
    ));

    println!("\nfresh-check: Debian 12 (debootstrap minbase + {INCLUDE}), clone of {head}");
    println!("| step | wall time | installed or answered |");
    println!("|---|---|---|");
    for (step, took, note) in &times {
        println!("| {step} | {:.0} s | {note} |", took.as_secs_f64());
    }
    println!(
        "fresh-check: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.keep {
        say(&format!("kept {}", run_dir.display()));
    } else {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    Ok(())
}

/// Make (or reuse) the debootstrap root filesystem and import it as [`IMAGE`].
fn rootfs_image(base: &Path, args: &FreshArgs) -> Result<()> {
    let key = format!("{}|{INCLUDE}", args.mirror);
    let digest = &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()))[..12];
    let tarball = base.join(format!("bookworm-{digest}.tar"));
    if args.rebuild_rootfs || !tarball.exists() {
        let dir = base.join("rootfs-build");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        say(&format!(
            "debootstrap --variant=minbase --include={INCLUDE} bookworm ({})",
            args.mirror
        ));
        run_cmd(
            Command::new("debootstrap")
                .args(["--variant=minbase", &format!("--include={INCLUDE}")])
                .arg("bookworm")
                .arg(&dir)
                .arg(&args.mirror),
        )?;
        // The updates and security suites, as a Debian installer would configure them.
        let security = args.mirror.replace("/debian", "/debian-security");
        std::fs::write(
            dir.join("etc/apt/sources.list"),
            format!(
                "deb {m} bookworm main\ndeb {m} bookworm-updates main\n\
                 deb {security} bookworm-security main\n",
                m = args.mirror
            ),
        )?;
        let tmp = tarball.with_extension("tmp");
        run_cmd(
            Command::new("tar")
                .arg("-C")
                .arg(&dir)
                .args(["--numeric-owner", "-cf"])
                .arg(&tmp)
                .arg("."),
        )?;
        std::fs::rename(&tmp, &tarball)?;
        std::fs::remove_dir_all(&dir)?;
    } else {
        say(&format!(
            "reusing {} (--rebuild-rootfs to make it again)",
            tarball.display()
        ));
    }
    say(&format!("docker import {} {IMAGE}", tarball.display()));
    run_cmd(
        Command::new("docker")
            .arg("import")
            .arg(&tarball)
            .arg(IMAGE)
            .stdout(Stdio::null()),
    )
}

/// Copy the host's default toolchain into `<run>/rustup` with its host target only, and make a
/// `<run>/cargo/bin` with rustup's proxies. Returns the toolchain's name.
fn copy_toolchain(run_dir: &Path) -> Result<String> {
    let sysroot =
        PathBuf::from(capture(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let name = sysroot
        .file_name()
        .context("rustc's sysroot has no name")?
        .to_string_lossy()
        .into_owned();
    let host = capture(Command::new("rustc").args(["--print", "host-tuple"]))?
        .trim()
        .to_string();
    let rustup_home = run_dir.join("rustup");
    let dest = rustup_home.join("toolchains").join(&name);
    std::fs::create_dir_all(dest.parent().unwrap())?;
    say(&format!(
        "copying toolchain {name} (host target {host} only)"
    ));
    run_cmd(Command::new("cp").arg("-a").arg(&sysroot).arg(&dest))?;
    // Other targets' standard libraries: what `rustup target add` put there on this host.
    let rustlib = dest.join("lib/rustlib");
    let mut components = std::fs::read_to_string(rustlib.join("components")).unwrap_or_default();
    for entry in std::fs::read_dir(&rustlib)? {
        let entry = entry?;
        let t = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("lib").is_dir() && t != host && t.contains('-') {
            std::fs::remove_dir_all(entry.path())?;
            let _ = std::fs::remove_file(rustlib.join(format!("manifest-rust-std-{t}")));
            components = components
                .lines()
                .filter(|l| *l != format!("rust-std-{t}"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
    }
    std::fs::write(rustlib.join("components"), components)?;
    // rustup (1.28+) reads what is installed from multirust-config.toml, not from `components`:
    // without this the copy's `rustup target list --installed` still names the host's other
    // targets, the preflight installs none of them, and the tier builds find no `core`.
    let config_path = rustlib.join("multirust-config.toml");
    if let Ok(text) = std::fs::read_to_string(&config_path) {
        let mut config: toml::Table =
            toml::from_str(&text).with_context(|| format!("reading {}", config_path.display()))?;
        if let Some(toml::Value::Array(list)) = config.get_mut("components") {
            list.retain(|c| {
                let field = |k: &str| c.get(k).and_then(|v| v.as_str());
                field("pkg") != Some("rust-std") || field("target") == Some(host.as_str())
            });
        }
        std::fs::write(&config_path, toml::to_string(&config)?)?;
    }
    std::fs::write(
        rustup_home.join("settings.toml"),
        format!("version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"default\"\n"),
    )?;
    let bin = run_dir.join("cargo/bin");
    std::fs::create_dir_all(&bin)?;
    let rustup = capture(Command::new("sh").args(["-c", "command -v rustup"]))?;
    std::fs::copy(rustup.trim(), bin.join("rustup")).context("copying the rustup binary")?;
    for proxy in [
        "cargo",
        "rustc",
        "rustdoc",
        "rustfmt",
        "cargo-fmt",
        "cargo-clippy",
        "clippy-driver",
    ] {
        std::os::unix::fs::symlink("rustup", bin.join(proxy))?;
    }
    Ok(name)
}

/// The fresh machine: a running container that steps are `docker exec`ed into.
struct Container {
    name: String,
    src: PathBuf,
}

/// What is installed: Debian packages, rustup targets, PyPI packages in the project venv.
struct Snapshot {
    deb: Vec<String>,
    targets: Vec<String>,
    pip: Vec<String>,
}

impl Snapshot {
    fn added_since(&self, before: &Snapshot) -> String {
        let new = |now: &[String], then: &[String]| -> Vec<String> {
            now.iter().filter(|x| !then.contains(x)).cloned().collect()
        };
        let mut parts = Vec::new();
        let deb = new(&self.deb, &before.deb);
        if !deb.is_empty() {
            parts.push(format!("{} Debian packages ({})", deb.len(), deb.join(" ")));
        }
        let targets = new(&self.targets, &before.targets);
        if !targets.is_empty() {
            parts.push(format!("rustup targets {}", targets.join(" ")));
        }
        let pip = new(&self.pip, &before.pip);
        if !pip.is_empty() {
            parts.push(format!("{} PyPI packages ({})", pip.len(), pip.join(" ")));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }
}

impl Container {
    fn start(name: &str, run_dir: &Path, src: &Path, args: &FreshArgs) -> Result<Container> {
        let dir = run_dir.to_string_lossy();
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--rm", "--name", name])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .args(["-v", &format!("{dir}:{dir}")])
            .args(["-e", &format!("RUSTUP_HOME={dir}/rustup")])
            .args(["-e", &format!("CARGO_HOME={dir}/cargo")])
            .args([
                "-e",
                &format!("PATH={dir}/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ])
            .args(["-e", "TERM=dumb"]);
        if !args.no_host_ca {
            let ca = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            let inside = "/etc/ssl/host-ca.pem";
            cmd.args(["-v", &format!("{ca}:{inside}:ro")]);
            for var in [
                "SSL_CERT_FILE",
                "CARGO_HTTP_CAINFO",
                "PIP_CERT",
                "REQUESTS_CA_BUNDLE",
                "GIT_SSL_CAINFO",
            ] {
                cmd.args(["-e", &format!("{var}={inside}")]);
            }
        }
        cmd.args([IMAGE, "sleep", "infinity"]).stdout(Stdio::null());
        run_cmd(&mut cmd)?;
        say(&format!(
            "started container {name} ({IMAGE}; docker socket, run dir, {})",
            if args.no_host_ca {
                "no host CA"
            } else {
                "host CA bundle"
            }
        ));
        Ok(Container {
            name: name.into(),
            src: src.to_path_buf(),
        })
    }

    /// Run `argv` in the clone, output streamed to this terminal.
    fn exec(&self, argv: &[&str]) -> Result<()> {
        run_cmd(
            Command::new("docker")
                .args(["exec", "-w"])
                .arg(&self.src)
                .arg(&self.name)
                .args(argv),
        )
    }

    fn capture(&self, script: &str) -> Result<Vec<String>> {
        let out = capture(
            Command::new("docker")
                .args(["exec", "-w"])
                .arg(&self.src)
                .arg(&self.name)
                .args(["sh", "-c", script]),
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            deb: self.capture("dpkg-query -W -f='${Package}\\n'")?,
            targets: self.capture("rustup target list --installed")?,
            pip: self.capture(
                "if [ -x target/pyenv/bin/python ]; then \
                 target/pyenv/bin/python -m pip list --format=freeze 2>/dev/null; fi",
            )?,
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Run the loaded image as the README says (read-only, tmpfs /tmp, models read-only, published
/// on loopback) and wait for `/health` to say ready. Checks first that `tag` is the image the
/// fresh build made (its config digest is one of the summary's).
fn serve_health(tag: &str, summary: &serde_json::Value, models: &Path) -> Result<String> {
    let id = capture(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", tag]))
        .with_context(|| format!("{tag} is not in Docker after build-images --load"))?;
    let ours = summary["tiers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["config_digest"].as_str() == Some(id.trim()));
    if !ours {
        bail!("{tag} is {} — not an image of the fresh build", id.trim());
    }
    let name = format!("bitnet-fresh-serve-{}", std::process::id());
    struct Rm<'a>(&'a str);
    impl Drop for Rm<'_> {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["rm", "-f", self.0])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    run_cmd(
        Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--read-only",
                "--tmpfs",
                "/tmp",
            ])
            .args(["-v", &format!("{}:/models:ro", models.display())])
            .args(["-p", "127.0.0.1::8080", tag])
            .stdout(Stdio::null()),
    )?;
    let _rm = Rm(&name);
    let port = capture(Command::new("docker").args(["port", &name, "8080/tcp"]))?;
    let addr = port
        .lines()
        .next()
        .context("docker port printed nothing")?
        .trim()
        .to_string();
    say(&format!(
        "{tag} runs as {name} on {addr}; waiting for /health"
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(reply) = http_get(&addr, "/health") {
            if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
                say(&format!("/health: {body}"));
                return Ok(format!("200 {body}"));
            }
            last = reply.lines().next().unwrap_or("").to_string();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = Command::new("docker")
        .args(["logs", "--tail", "30", &name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default();
    bail!("{tag} did not report ready within 120 s (last: {last:?}); its log:\n{logs}")
}

fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    capture(Command::new("git").arg("-C").arg(root).args(args))
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
