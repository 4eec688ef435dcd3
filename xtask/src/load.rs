//! `cargo xtask load`: a load run against the real server. Builds `bitnet-server` (release, or
//! `--dev` for the debug binary `cargo test` already built), writes the tiny synthetic model
//! (`gen-model --preset tiny`), starts the server on 127.0.0.1 and drives `--connections`
//! clients for `--duration` seconds, each on its own keep-alive connection, mixing streaming and
//! non-streaming completions, `/tokenize`, and clients that leave mid-stream. Then prints
//! requests by kind, errors by kind, p50/p99 latency and the server's RSS, and fails when any
//! error other than a deliberate 503 (`queue_full`) happened, the server's RSS grew by more than
//! `--max-rss-growth` percent, or it did not exit 0 on SIGTERM.
//!
//! A Rust client rather than wrk or oha: one run needs SSE streams read to `[DONE]`, clients that
//! drop a stream half-read, per-kind latency and errors classified by the API's error code, and
//! the server's RSS from `/proc`; wrk would need Lua for each, oha has no mixed workload, and
//! this needs no new package.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::gen_model::{self, GenModelArgs};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Seconds of load (after a warm-up of `--warmup` seconds).
    #[arg(long, default_value_t = 300)]
    pub duration: u64,
    /// Seconds of the same load before the measured run; RSS "before" is taken after it.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Concurrent clients, one keep-alive connection each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Fail when the server's RSS after the run exceeds the one before by more than this
    /// many percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_rss_growth: f64,
    /// Use the debug server binary (`target/debug/bitnet-server`, built by `cargo test`)
    /// instead of building the release one.
    #[arg(long)]
    pub dev: bool,
    /// The model to serve [default: the tiny synthetic model, written under target/load/].
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// What a client does in one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `/v1/completions` with `stream: true`, read to `data: [DONE]`.
    Stream,
    /// `/v1/chat/completions`, the whole answer.
    Complete,
    /// `/tokenize`.
    Tokenize,
    /// `/completion` with `stream: true`, dropped after the first chunk.
    Disconnect,
}

impl Kind {
    /// The mix: 4 streams, 3 completions, 2 tokenize, 1 disconnect in every 10 requests.
    fn nth(i: usize) -> Kind {
        match i % 10 {
            0..=3 => Kind::Stream,
            4..=6 => Kind::Complete,
            7 | 8 => Kind::Tokenize,
            _ => Kind::Disconnect,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Complete => "chat (whole)",
            Kind::Tokenize => "tokenize",
            Kind::Disconnect => "disconnect mid-stream",
        }
    }
}

/// Results of one run, by kind.
#[derive(Default)]
struct Tally {
    served: BTreeMap<Kind, Vec<Duration>>,
    /// (kind, what) → count; `what` is the status and API error code, or the transport error.
    errors: BTreeMap<(Kind, String), usize>,
}

/// The error that is part of the design: the queue is full, come back after Retry-After.
const DELIBERATE: &str = "503 queue_full";

pub fn run(args: &LoadArgs) -> Result<()> {
    let root = crate::workspace_root();
    let server = if args.dev {
        let path = root.join("target/debug/bitnet-server");
        if !path.exists() {
            bail!(
                "{} is missing: build it with `cargo build --locked -p bitnet-server` or drop --dev",
                path.display()
            );
        }
        path
    } else {
        crate::bench::build_server(&root)?
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            let path = root.join("target/load/tiny.gguf");
            if !path.exists() {
                gen_model::run(&GenModelArgs {
                    preset: "tiny".into(),
                    format: "i2_s".into(),
                    embedding: "f16".into(),
                    out: path.clone(),
                    seed: 1,
                    arch: "bitnet-b1.58".into(),
                })?;
            }
            path
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = root.join("target/load/server.log");
    std::fs::create_dir_all(log.parent().expect("under target"))?;
    let child = Command::new(&server)
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--model")
        .arg(&model)
        .args(["--parallel", "4", "--queue-size", "64", "--threads", "1"])
        .env_remove("BITNET_API_KEY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let mut child = Stop(Some(child));
    let pid = child.pid();
    eprintln!(
        "load: {} on 127.0.0.1:{port} with {} (log: {})",
        server.display(),
        model.display(),
        log.display()
    );
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        wait_ready(&base).await?;
        let rss_idle = rss_kib(pid)?;
        eprintln!(
            "load: warm-up, {} s with {} clients",
            args.warmup, args.connections
        );
        let warm = drive(&base, args.connections, Duration::from_secs(args.warmup)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before = rss_kib(pid)?;
        eprintln!(
            "load: {} s with {} clients",
            args.duration, args.connections
        );
        let started = Instant::now();
        let tally = drive(&base, args.connections, Duration::from_secs(args.duration)).await;
        let took = started.elapsed();
        // Cancelled and finished requests release their memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after = rss_kib(pid)?;
        let health = client(1)
            .get(format!("{base}/health"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        anyhow::Ok((warm, tally, took, rss_idle, rss_before, rss_after, health))
    });
    let (warm, tally, took, rss_idle, rss_before, rss_after, health) = outcome?;
    let exit = child.sigterm()?;
    let growth = (rss_after as f64 - rss_before as f64) / rss_before as f64 * 100.0;
    print!("{}", report(&tally, took, args.connections));
    println!(
        "server RSS: {} MiB idle, {} MiB after the {} s warm-up (before), {} MiB after the run: \
         {growth:+.1} % (limit {} %)",
        mib(rss_idle),
        mib(rss_before),
        args.warmup,
        mib(rss_after),
        args.max_rss_growth
    );
    println!(
        "warm-up: {} served, {} errors; /health after the run: {health}; exit on SIGTERM: {exit:?}",
        warm.served.values().map(Vec::len).sum::<usize>(),
        warm.errors.values().sum::<usize>()
    );
    let unexpected: usize = tally
        .errors
        .iter()
        .chain(&warm.errors)
        .filter(|((_, what), _)| what != DELIBERATE)
        .map(|(_, n)| n)
        .sum();
    if unexpected > 0 {
        bail!("{unexpected} errors other than {DELIBERATE} (see the table)");
    }
    if tally.served.values().map(Vec::len).sum::<usize>() == 0 {
        bail!("no request was served");
    }
    if growth > args.max_rss_growth {
        bail!(
            "the server's RSS grew by {growth:.1} % during the run, above --max-rss-growth {}",
            args.max_rss_growth
        );
    }
    if health != 200 {
        bail!("/health answered {health} after the run");
    }
    if exit != Some(0) {
        bail!("the server exited with {exit:?} on SIGTERM, not 0");
    }
    Ok(())
}

/// The server process, stopped with SIGKILL if the run fails before [`Stop::sigterm`].
struct Stop(Option<Child>);

impl Stop {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then the exit code (None if it is still running after 20 s; dropping `self`
    /// then kills it).
    fn sigterm(&mut self) -> Result<Option<i32>> {
        let Some(child) = self.0.as_mut() else {
            return Ok(None);
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.0 = None;
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain-HTTP client keeping at most `idle` connections (no proxies).
fn client(idle: usize) -> reqwest::Client {
    // reqwest is built without a default TLS provider; it wants one even for http://.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a plain HTTP client")
}

async fn wait_ready(base: &str) -> Result<()> {
    let http = client(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the server was not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident set size of `pid` in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status: is the server still running?"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `clients` clients, each on its own connection, for `duration`.
async fn drive(base: &str, clients: usize, duration: Duration) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (base, tally) = (base.to_string(), tally.clone());
            tokio::spawn(async move {
                let http = client(1);
                let mut i = c;
                while Instant::now() < until {
                    let kind = Kind::nth(i);
                    let prompt = PROMPTS[i % PROMPTS.len()];
                    let started = Instant::now();
                    let result = one(&http, &base, kind, prompt, i).await;
                    let took = started.elapsed();
                    let retry_after = {
                        let mut t = tally.lock().expect("not poisoned");
                        match result {
                            Ok(()) => {
                                t.served.entry(kind).or_default().push(took);
                                None
                            }
                            Err(what) => {
                                let deliberate = what == DELIBERATE;
                                *t.errors.entry((kind, what)).or_default() += 1;
                                deliberate.then(|| Duration::from_secs(1))
                            }
                        }
                    };
                    if let Some(wait) = retry_after {
                        tokio::time::sleep(wait).await;
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(tally)
        .ok()
        .expect("every client is done")
        .into_inner()
        .expect("not poisoned")
}

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "Write a haiku about ternary weights.",
    "Once upon a time, in a land of {-1, 0, 1},",
    "Explain keep-alive timeouts to a load balancer, briefly, in plain words, please.",
];

/// One request of `kind`; Err names what went wrong (status and API error code, or transport).
async fn one(
    http: &reqwest::Client,
    base: &str,
    kind: Kind,
    prompt: &str,
    i: usize,
) -> Result<(), String> {
    use serde_json::json;
    let (path, body) = match kind {
        Kind::Stream => (
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 24, "stream": true, "seed": i}),
        ),
        Kind::Complete => (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                   "seed": i}),
        ),
        Kind::Tokenize => ("/tokenize", json!({"content": prompt.repeat(1 + i % 8)})),
        Kind::Disconnect => (
            "/completion",
            json!({"prompt": prompt, "n_predict": 256, "stream": true, "ignore_eos": true,
                   "seed": i}),
        ),
    };
    let transport = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else if e.is_body() || e.is_decode() {
            "body"
        } else {
            "request"
        };
        format!("{what}: {e}")
    };
    let mut response = http
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    if status != 200 {
        let v = json_of(response).await.unwrap_or_default();
        return Err(format!(
            "{status} {}",
            v["error"]["code"].as_str().unwrap_or("?")
        ));
    }
    match kind {
        Kind::Disconnect => {
            // The first event, then leave: the server must cancel the generation.
            response.chunk().await.map_err(transport)?;
            drop(response);
        }
        Kind::Stream => {
            let text = response.text().await.map_err(transport)?;
            if !text.trim_end().ends_with("data: [DONE]") {
                return Err("stream without [DONE]".into());
            }
        }
        Kind::Complete => {
            let v = json_of(response).await.map_err(transport)?;
            if v["choices"][0]["message"]["content"].as_str().is_none() {
                return Err(format!("no message in {v}"));
            }
        }
        Kind::Tokenize => {
            let v = json_of(response).await.map_err(transport)?;
            if v["tokens"].as_array().is_none_or(|t| t.is_empty()) {
                return Err(format!("no tokens in {v}"));
            }
        }
    }
    Ok(())
}

/// The body as JSON (`Null` when it is not JSON).
async fn json_of(response: reqwest::Response) -> Result<serde_json::Value, reqwest::Error> {
    let bytes = response.bytes().await?;
    Ok(serde_json::from_slice(&bytes).unwrap_or_default())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(tally: &Tally, took: Duration, clients: usize) -> String {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let mut out = format!(
        "\n{clients} clients for {:.0} s\n\n| kind | served | req/s | p50 ms | p99 ms | errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        took.as_secs_f64()
    );
    let mut all = Vec::new();
    for (kind, latencies) in &tally.served {
        let mut sorted = latencies.clone();
        sorted.sort();
        let errors: usize = tally
            .errors
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, n)| n)
            .sum();
        out += &format!(
            "| {} | {} | {:.1} | {} | {} | {errors} |\n",
            kind.name(),
            sorted.len(),
            sorted.len() as f64 / took.as_secs_f64(),
            ms(percentile(&sorted, 50.0)),
            ms(percentile(&sorted, 99.0)),
        );
        all.extend(sorted);
    }
    all.sort();
    let errors: usize = tally.errors.values().sum();
    out += &format!(
        "| all | {} | {:.1} | {} | {} | {errors} |\n\nerrors by kind:",
        all.len(),
        all.len() as f64 / took.as_secs_f64(),
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 99.0)),
    );
    if tally.errors.is_empty() {
        out += " none\n";
    } else {
        out += "\n";
        for ((kind, what), n) in &tally.errors {
            let note = if what == DELIBERATE {
                " (deliberate)"
            } else {
                ""
            };
            out += &format!("  {}: {what}: {n}{note}\n", kind.name());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_and_percentiles() {
        let kinds: Vec<Kind> = (0..10).map(Kind::nth).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Stream).count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Disconnect).count(), 1);
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
