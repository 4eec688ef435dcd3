//! Kernel microbenchmark for the BitNet b1.58 2B-4T matrix shapes.
//!
//! ```text
//! cargo run --release -p bitnet-server --example kernel_bench -- [options]
//!   --variants v4,v3,...   kernel variants (default: all this CPU supports)
//!   --threads 1,2          thread counts (default 1,2)
//!   --formats i2s,tq2,tq1  ternary formats (default all)
//!   --sections bw,pool,shapes,model,head   what to run (default all)
//!   --quick                fewer repetitions
//!   --cpu-time             time by this thread's CPU time instead of wall clock: immune to
//!                          other processes on a shared machine; only meaningful with --threads 1
//!   --hugepages            back weights with 2 MiB pages (anonymous mmap + MADV_HUGEPAGE);
//!                          default 4 KiB pages, as an mmap'd model file gets
//! ```
//! Sections: `bw` memory read bandwidth; `pool` cost of one empty parallel region (ours vs
//! rayon); `shapes` each 2B-4T matrix at n = 1 and 128 tokens (GB/s of weights read, GOPS);
//! `model` a whole decode step (30 layers × 7 ternary matmuls + the F16 head, activation
//! quantization included, no attention/norms) and a pp128 prefill step, i.e. the matmul ceiling
//! of the engine; `head` the Q8 head's speed and its error against the F16 head.
//!
//! Working sets are larger than the caches (many copies of each matrix) so that GEMV numbers
//! reflect DRAM bandwidth, as in real decoding.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitnet_gguf::quant::ternary::encode_row;
use bitnet_kernels::{
    Kernels, Q8Matrix, QuantActs, TernaryFormat, TernaryJob, TernaryView, ThreadPool,
};
use half::f16;
use memmap2::{Advice, MmapMut};

/// Page-aligned, optionally huge-page backed, zeroed bytes.
fn big(len: usize) -> MmapMut {
    let m = MmapMut::map_anon(len.max(1)).expect("anonymous mmap");
    if HUGE.load(std::sync::atomic::Ordering::Relaxed) {
        m.advise(Advice::HugePage).expect("madvise(MADV_HUGEPAGE)");
    }
    m
}

static HUGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CPU_TIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Nanoseconds this thread has run on a CPU (Linux schedstat), immune to preemption by other
/// processes.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("reading /proc/thread-self/schedstat")
}

fn big_copy(src: &[u8]) -> MmapMut {
    let mut m = big(src.len());
    m[..src.len()].copy_from_slice(src);
    m
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn fill_bytes(buf: &mut [u8], rng: &mut Rng) {
    for c in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

/// `rows × cols` matrix bytes in `format` with random ternary content.
fn matrix(format: TernaryFormat, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    match format {
        TernaryFormat::I2S => {
            let mut v = vec![0u8; rows * cols / 4];
            fill_bytes(&mut v, rng);
            // Map the never-written code 3 to 2 so the data is a real ternary matrix.
            for b in &mut v {
                let hi = *b & 0xAA;
                *b &= !(hi >> 1 & *b);
            }
            v
        }
        _ => {
            // Encode one random row and vary it cheaply: the kernels' speed does not depend on
            // the values, and encoding 2B-4T-sized TQ matrices element by element is slow.
            let rb = format.row_bytes(cols);
            let codes: Vec<u8> = (0..cols).map(|_| (rng.next() % 3) as u8).collect();
            let scales = vec![f16::from_f32(0.01); cols / 256];
            let row = encode_row(format, &codes, &scales);
            let mut v = Vec::with_capacity(rows * rb);
            for _ in 0..rows {
                v.extend_from_slice(&row);
            }
            v
        }
    }
}

fn acts(n: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n * cols).map(|_| rng.unit()).collect()
}

/// Median seconds per call of `f`, running for about `budget`.
fn time<F: FnMut()>(budget: Duration, mut f: F) -> f64 {
    f();
    if CPU_TIME.load(std::sync::atomic::Ordering::Relaxed) {
        // CPU time of this thread over ≥ 0.3 s (the counter ticks coarsely), averaged.
        let (t0, w0) = (thread_cpu_ns(), Instant::now());
        let mut k = 0u64;
        while k < 3 || w0.elapsed() < budget.max(Duration::from_millis(300)) {
            f();
            k += 1;
        }
        return (thread_cpu_ns() - t0) as f64 * 1e-9 / k as f64;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 10_000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

struct Opts {
    variants: Vec<&'static Kernels>,
    threads: Vec<usize>,
    formats: Vec<TernaryFormat>,
    sections: Vec<String>,
    budget: Duration,
}

fn parse() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let variants = match get("--variants") {
        Some(v) if v != "all" => v
            .split(',')
            .map(|n| Kernels::by_name(n).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
        _ => Kernels::available()
            .into_iter()
            .filter(|k| k.name != "scalar")
            .collect(),
    };
    let threads = get("--threads").map_or(vec![1, 2], |s| {
        s.split(',')
            .map(|t| t.parse().expect("--threads"))
            .collect()
    });
    let formats = get("--formats").map_or(TernaryFormat::ALL.to_vec(), |s| {
        s.split(',')
            .map(|f| match f {
                "i2s" => TernaryFormat::I2S,
                "tq2" => TernaryFormat::Tq2_0,
                "tq1" => TernaryFormat::Tq1_0,
                _ => panic!("unknown format {f}"),
            })
            .collect()
    });
    let sections = get("--sections").map_or(
        ["bw", "pool", "shapes", "model", "head"]
            .map(String::from)
            .to_vec(),
        |s| s.split(',').map(String::from).collect(),
    );
    let quick = args.iter().any(|a| a == "--quick");
    CPU_TIME.store(
        args.iter().any(|a| a == "--cpu-time"),
        std::sync::atomic::Ordering::Relaxed,
    );
    HUGE.store(
        args.iter().any(|a| a == "--hugepages"),
        std::sync::atomic::Ordering::Relaxed,
    );
    Opts {
        variants,
        threads,
        formats,
        sections,
        budget: Duration::from_millis(if quick { 150 } else { 600 }),
    }
}

fn main() {
    let o = parse();
    println!(
        "# kernel_bench — CPU best variant: {}, variants: {}, weight pages: {}, timing: {}",
        Kernels::best().name,
        o.variants
            .iter()
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(","),
        if HUGE.load(std::sync::atomic::Ordering::Relaxed) {
            "2 MiB (MADV_HUGEPAGE)"
        } else {
            "4 KiB"
        },
        if CPU_TIME.load(std::sync::atomic::Ordering::Relaxed) {
            "thread CPU time"
        } else {
            "wall clock, median"
        }
    );
    let probe = BwProbe::new();
    if o.sections.iter().any(|s| s == "bw") {
        bandwidth(&o, &probe);
    }
    if o.sections.iter().any(|s| s == "pool") {
        pool_overhead(&o);
    }
    if o.sections.iter().any(|s| s == "shapes") {
        shapes(&o);
    }
    if o.sections.iter().any(|s| s == "model") {
        model(&o, &probe);
    }
    if o.sections.iter().any(|s| s == "head") {
        head(&o);
    }
}

/// A 1 GiB buffer whose read bandwidth is the yardstick for memory-bound kernels.
struct BwProbe {
    buf: Vec<u64>,
}

impl BwProbe {
    fn new() -> BwProbe {
        // Every page written: untouched pages of a zeroed allocation all map the same zero
        // page, which would be read from cache.
        let mut rng = Rng(3);
        BwProbe {
            buf: (0..(1usize << 30) / 8).map(|_| rng.next()).collect(),
        }
    }

    /// GB/s reading the whole buffer once per call on `pool`.
    fn measure(&self, pool: &ThreadPool, budget: Duration) -> f64 {
        let chunks = 64;
        let per = self.buf.len() / chunks;
        let s = time(budget, || {
            pool.parallel_for(chunks, |c| {
                let sl = &self.buf[c * per..(c + 1) * per];
                let mut acc = [0u64; 8];
                for ch in sl.chunks_exact(8) {
                    for i in 0..8 {
                        acc[i] = acc[i].wrapping_add(ch[i]);
                    }
                }
                black_box(acc);
            });
        });
        (self.buf.len() * 8) as f64 / s / 1e9
    }
}

/// Read bandwidth over 1 GiB.
fn bandwidth(o: &Opts, probe: &BwProbe) {
    println!("\n## Memory read bandwidth (1 GiB, sum of u64)\n\n| threads | GB/s |\n|---|---|");
    for &t in &o.threads {
        let gbs = probe.measure(&ThreadPool::new(t), o.budget * 2);
        println!("| {t} | {gbs:.1} |");
    }
}

fn pool_overhead(o: &Opts) {
    println!("\n## Cost of one parallel region (2 empty chunks per thread)\n");
    println!("| threads | ours µs | rayon µs |\n|---|---|---|");
    for &t in &o.threads {
        let pool = ThreadPool::new(t);
        let ours = time(o.budget, || {
            for _ in 0..1000 {
                pool.parallel_for(2 * t, |c| {
                    black_box(c);
                });
            }
        }) / 1000.0;
        let rp = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .expect("rayon pool");
        let theirs = time(o.budget, || {
            rp.install(|| {
                use rayon::prelude::*;
                for _ in 0..1000 {
                    (0..2 * t).into_par_iter().for_each(|c| {
                        black_box(c);
                    });
                }
            })
        }) / 1000.0;
        println!("| {t} | {:.2} | {:.2} |", ours * 1e6, theirs * 1e6);
    }
}

/// The 2B-4T linear shapes: (name, rows, cols, count per layer).
const SHAPES: [(&str, usize, usize); 4] = [
    ("q/o 2560×2560", 2560, 2560),
    ("k/v 640×2560", 640, 2560),
    ("gate/up 6912×2560", 6912, 2560),
    ("down 2560×6912", 2560, 6912),
];

fn shapes(o: &Opts) {
    println!("\n## Ternary matmul per shape (median per call)\n");
    println!("GB/s = weight bytes / time; GOPS = 2·rows·cols·n / time.\n");
    println!(
        "| variant | format | shape | n | threads | µs | GB/s | GOPS |\n|---|---|---|---|---|---|---|---|"
    );
    let mut rng = Rng(11);
    for &format in &o.formats {
        for &(name, rows, cols) in &SHAPES {
            let one = matrix(format, rows, cols, &mut rng);
            // Enough copies to exceed the last-level cache several times over.
            let copies = (256 << 20) / one.len() + 1;
            let mut all = big(copies * one.len());
            for c in all.chunks_exact_mut(one.len()) {
                c.copy_from_slice(&one);
            }
            let views: Vec<TernaryView> = all
                .chunks_exact(one.len())
                .map(|d| TernaryView::new(format, rows, cols, d, 0.01).expect("view"))
                .collect();
            for n in [1usize, 4, 128] {
                let a = QuantActs::quantize(&acts(n, cols, &mut rng), cols);
                let mut y = vec![0f32; n * rows];
                for k in &o.variants {
                    for &t in &o.threads {
                        let pool = ThreadPool::new(t);
                        let mut i = 0;
                        let s = time(o.budget, || {
                            k.ternary_matmul(&pool, &views[i % views.len()], &a, &mut y, rows);
                            i += 1;
                        });
                        let gbs = one.len() as f64 / s / 1e9;
                        let gops = 2.0 * (rows * cols * n) as f64 / s / 1e9;
                        println!(
                            "| {} | {format} | {name} | {n} | {t} | {:.1} | {gbs:.1} | {gops:.0} |",
                            k.name,
                            s * 1e6
                        );
                    }
                }
            }
        }
    }
    println!("\n## F16 head 128256×2560 (656 MB)\n");
    println!("| variant | n | threads | ms | GB/s | GFLOPS |\n|---|---|---|---|---|---|");
    let (rows, cols) = (128_256, 2560);
    let w = f16_matrix(rows, cols, &mut rng);
    let w = w.as_slice();
    for n in [1usize, 8] {
        let x = acts(n, cols, &mut rng);
        let mut y = vec![0f32; n * rows];
        for k in &o.variants {
            for &t in &o.threads {
                let pool = ThreadPool::new(t);
                let s = time(o.budget, || {
                    k.f16_matmul(&pool, w, rows, cols, &x, &mut y, rows)
                });
                println!(
                    "| {} | {n} | {t} | {:.2} | {:.1} | {:.1} |",
                    k.name,
                    s * 1e3,
                    (rows * cols * 2) as f64 / s / 1e9,
                    2.0 * (rows * cols * n) as f64 / s / 1e9
                );
            }
        }
    }
}

fn f16_matrix(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f16> {
    (0..rows * cols)
        .map(|_| f16::from_f32(rng.unit() * 0.05))
        .collect()
}

/// The ternary weights of the whole 2B-4T model in one format.
struct Model {
    layers: Vec<Vec<MmapMut>>,
}

const LAYER: [(usize, usize); 7] = [
    (2560, 2560),
    (640, 2560),
    (640, 2560),
    (2560, 2560),
    (6912, 2560),
    (6912, 2560),
    (2560, 6912),
];

impl Model {
    fn new(format: TernaryFormat, rng: &mut Rng) -> Model {
        // Distinct bytes per layer would only cost generation time: one random set of matrices
        // is copied 30 times, so every layer still streams its own memory.
        let one: Vec<Vec<u8>> = LAYER
            .iter()
            .map(|&(r, c)| matrix(format, r, c, rng))
            .collect();
        Model {
            layers: (0..30)
                .map(|_| one.iter().map(|m| big_copy(m)).collect())
                .collect(),
        }
    }

    fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|m| m.len()).sum()
    }

    /// One forward step's matmuls for `n` tokens; the head runs for the last token only.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        k: &Kernels,
        pool: &ThreadPool,
        format: TernaryFormat,
        head: &[f16],
        x: &[f32],
        n: usize,
        bufs: &mut Bufs,
    ) {
        let v = |l: usize, i: usize| {
            let (r, c) = LAYER[i];
            TernaryView::new(format, r, c, &self.layers[l][i], 0.01).expect("view")
        };
        for l in 0..30 {
            let (wq, wk, wv, wo, wg, wu, wd) = (
                v(l, 0),
                v(l, 1),
                v(l, 2),
                v(l, 3),
                v(l, 4),
                v(l, 5),
                v(l, 6),
            );
            bufs.a.quantize_into(&x[..n * 2560], 2560);
            let (q, rest) = bufs.y1.split_at_mut(n * 2560);
            let (kk, vv) = rest.split_at_mut(n * 640);
            k.ternary_matmul_many(
                pool,
                &bufs.a,
                &mut [
                    TernaryJob {
                        w: &wq,
                        y: q,
                        y_stride: 2560,
                    },
                    TernaryJob {
                        w: &wk,
                        y: kk,
                        y_stride: 640,
                    },
                    TernaryJob {
                        w: &wv,
                        y: &mut vv[..n * 640],
                        y_stride: 640,
                    },
                ],
            );
            bufs.a.quantize_into(&bufs.y1[..n * 2560], 2560);
            k.ternary_matmul(pool, &wo, &bufs.a, &mut bufs.y2[..n * 2560], 2560);
            bufs.a.quantize_into(&x[..n * 2560], 2560);
            let (g, u) = bufs.y3.split_at_mut(n * 6912);
            k.ternary_matmul_many(
                pool,
                &bufs.a,
                &mut [
                    TernaryJob {
                        w: &wg,
                        y: g,
                        y_stride: 6912,
                    },
                    TernaryJob {
                        w: &wu,
                        y: &mut u[..n * 6912],
                        y_stride: 6912,
                    },
                ],
            );
            bufs.a.quantize_into(&bufs.y3[..n * 6912], 6912);
            k.ternary_matmul(pool, &wd, &bufs.a, &mut bufs.y2[..n * 2560], 2560);
        }
        k.f16_matmul(
            pool,
            head,
            128_256,
            2560,
            &x[(n - 1) * 2560..n * 2560],
            &mut bufs.logits,
            128_256,
        );
    }
}

struct Bufs {
    a: QuantActs,
    y1: Vec<f32>,
    y2: Vec<f32>,
    y3: Vec<f32>,
    logits: Vec<f32>,
}

fn model(o: &Opts, probe: &BwProbe) {
    println!("\n## Whole-model matmuls, 2B-4T shapes (30 layers × 7 ternary + F16 head)\n");
    println!(
        "Decode = 1 token (ternary weights + 656 MB head read once); prefill = 128 tokens, head \
         for the last one. No attention, norms or sampling: this is the matmul ceiling.\n"
    );
    println!(
        "| variant | format | threads | decode ms | decode tok/s | read GB/s now | % of it | decode GB/s | pp128 ms | pp128 tok/s |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut rng = Rng(21);
    let head = f16_matrix(128_256, 2560, &mut rng);
    let head = head.as_slice();
    let x = acts(128, 2560, &mut rng);
    let mut bufs = Bufs {
        a: QuantActs::new(),
        y1: vec![0.0; 128 * 3840],
        y2: vec![0.0; 128 * 2560],
        y3: vec![0.0; 128 * 13824],
        logits: vec![0.0; 128_256],
    };
    for &format in &o.formats {
        let m = Model::new(format, &mut rng);
        let bytes = m.bytes() + head.len() * 2;
        for k in &o.variants {
            for &t in &o.threads {
                let pool = ThreadPool::new(t);
                // Bandwidth measured right before and after, so load from other processes
                // affects the yardstick and the kernel alike.
                let bw0 = probe.measure(&pool, o.budget);
                let d = time(o.budget * 3, || {
                    m.step(k, &pool, format, head, &x, 1, &mut bufs)
                });
                let bw1 = probe.measure(&pool, o.budget);
                let p = time(o.budget * 3, || {
                    m.step(k, &pool, format, head, &x, 128, &mut bufs)
                });
                let bw = (bw0 + bw1) / 2.0;
                let pct = (bytes as f64 / d / 1e9) / bw * 100.0;
                println!(
                    "| {} | {format} | {t} | {:.1} | {:.1} | {bw:.1} | {pct:.0}% | {:.1} | {:.0} | {:.0} |",
                    k.name,
                    d * 1e3,
                    1.0 / d,
                    bytes as f64 / d / 1e9,
                    p * 1e3,
                    128.0 / p
                );
            }
        }
        println!(
            "({format}: {:.0} MB of ternary weights + 656 MB head per decode step)",
            m.bytes() as f64 / 1e6
        );
    }
}

fn head(o: &Opts) {
    println!("\n## Q8 head (opt-in) vs F16 head, 128256×2560\n");
    let (rows, cols) = (128_256, 2560);
    let mut rng = Rng(31);
    // Embedding-like rows (sum of uniforms ≈ Gaussian, row norms varying) and a hidden state
    // with a few large channels, as after the final RMSNorm of a real model.
    let w: Vec<f16> = (0..rows * cols)
        .map(|i| {
            let g = rng.unit() + rng.unit() + rng.unit();
            f16::from_f32(g * 0.02 * (1.0 + (i / cols % 5) as f32 * 0.25))
        })
        .collect();
    let x: Vec<f32> = (0..cols)
        .map(|j| {
            let g = rng.unit() + rng.unit() + rng.unit();
            if j % 97 == 0 { g * 20.0 } else { g }
        })
        .collect();
    let pool2 = ThreadPool::new(*o.threads.iter().max().unwrap_or(&1));
    let t0 = Instant::now();
    let q = Q8Matrix::from_f16(&pool2, &w, rows, cols).expect("q8");
    println!(
        "Quantizing the head: {:.2} s on {} threads, {:.0} MB\n",
        t0.elapsed().as_secs_f64(),
        pool2.threads(),
        q.bytes() as f64 / 1e6
    );
    let k = o.variants[0];
    let mut exact = vec![0f32; rows];
    k.f16_matmul(&pool2, &w, rows, cols, &x, &mut exact, rows);
    let mut approx = vec![0f32; rows];
    k.q8_matmul(&pool2, &q, &x, &mut approx, rows);
    let err: f64 = exact
        .iter()
        .zip(&approx)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|p| p.0)
    };
    let maxdiff = exact
        .iter()
        .zip(&approx)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "Error vs F16 head: relative RMS {:.4}%, max |Δlogit| {maxdiff:.4} (logit RMS {:.3}), same argmax: {}\n",
        (err / norm).sqrt() * 100.0,
        (norm / rows as f64).sqrt(),
        argmax(&exact) == argmax(&approx)
    );
    println!("| variant | threads | F16 ms | Q8 ms | Q8 GB/s |\n|---|---|---|---|---|");
    for k in &o.variants {
        for &t in &o.threads {
            let pool = ThreadPool::new(t);
            let f = time(o.budget, || {
                k.f16_matmul(&pool, &w, rows, cols, &x, &mut exact, rows)
            });
            let s = time(o.budget, || k.q8_matmul(&pool, &q, &x, &mut approx, rows));
            println!(
                "| {} | {t} | {:.2} | {:.2} | {:.1} |",
                k.name,
                f * 1e3,
                s * 1e3,
                q.bytes() as f64 / s / 1e9
            );
        }
    }
}
