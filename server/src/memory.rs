//! What the machine can hold, and the `--ctx-size` and `--cache-ram` bounds it implies.
//!
//! Each sequence's KV cache grows on demand up to the context limit (`model::KvCache`), so an
//! oversized `--ctx-size` does not fail at load: it fails later, when one long request makes
//! the cache outgrow memory and the allocator aborts the process (or the kernel OOM-kills it).
//! [`check_context`] refuses such a limit up front, as well as one above the model's trained
//! context unless that is explicitly allowed. The prompt cache (the KV of ended requests, kept
//! for prompts that start the same way) comes on top: a `--cache-ram` given explicitly must fit
//! beside the KV cache of every sequence; without one the budget is
//! [`DEFAULT_CACHE_RAM`](crate::engine::DEFAULT_CACHE_RAM), lowered to half of what is left once
//! that KV cache and the model file (whose pages should stay resident) are counted (the other
//! half for activations, buffers and connections).
//!
//! Available memory is the smaller of `MemAvailable` (/proc/meminfo) and the room left under
//! the cgroup's limit (v2 `memory.max` − `memory.current` + reclaimable `inactive_file`, or v1
//! `memory.limit_in_bytes` − `memory.usage_in_bytes`): in a container the cgroup limit is what
//! the OOM killer enforces. The bound covers the KV cache only; the weights are a mapped file.
//!
//! At start it also makes the allocator return freed KV buffers to the system
//! ([`return_large_frees_to_the_os`]). This module does NOT allocate the cache or load the model.

use std::path::Path;

use crate::engine::DEFAULT_CACHE_RAM;
use crate::health::human_bytes;
use bitnet_gguf::GgufFile;
use bitnet_model::{ModelConfig, ModelKind};

/// Makes freed KV buffers go back to the operating system, so that the prompt cache's budget
/// bounds the process's memory. KV caches are megabytes per layer, allocated and freed as
/// requests come and go and as the prompt cache evicts. musl's allocator (the images) maps
/// each such buffer on its own and unmaps it when freed. glibc (a host build) does so too at
/// first, but raises its mapping threshold to the size of the first mapped buffer freed (up to
/// 32 MiB); later KV buffers then come from the heap, where freed ones stay resident. Measured
/// with a 512 MiB budget on the 2B-4T shape (`xtask/py/prompt_cache_ttft.py`): peak RSS 731 MiB
/// above the uncached run before, 470 MiB with the threshold fixed at 128 KiB. Called once at
/// start, before any thread allocates.
pub fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Memory a new allocation can get, and where the figure comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    /// e.g. `MemAvailable in /proc/meminfo` or `the cgroup limit (memory.max − memory.current)`.
    pub source: String,
}

/// The memory this process can still allocate, or `None` where neither figure is readable.
pub fn available() -> Option<Available> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let meminfo = read("/proc/meminfo")
        .and_then(|s| parse_meminfo(&s))
        .map(|bytes| Available {
            bytes,
            source: "MemAvailable in /proc/meminfo".into(),
        });
    let cgroup = match (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(current)) => {
            let reclaimable = read("/sys/fs/cgroup/memory.stat")
                .and_then(|s| stat_value(&s, "inactive_file"))
                .unwrap_or(0);
            cgroup_room(&max, &current, reclaimable).map(|bytes| Available {
                bytes,
                source: "the cgroup limit (/sys/fs/cgroup/memory.max − memory.current + \
                         inactive_file)"
                    .into(),
            })
        }
        _ => match (
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ) {
            (Some(max), Some(current)) => cgroup_room(&max, &current, 0).map(|bytes| Available {
                bytes,
                source: "the cgroup v1 limit (memory.limit_in_bytes − memory.usage_in_bytes)"
                    .into(),
            }),
            _ => None,
        },
    };
    match (meminfo, cgroup) {
        (Some(m), Some(c)) => Some(if c.bytes < m.bytes { c } else { m }),
        (m, c) => m.or(c),
    }
}

/// `MemAvailable` in bytes from the text of /proc/meminfo.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A `key value` line of a cgroup `memory.stat`.
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Room under a cgroup limit: `max − (current − reclaimable)` (`reclaimable`: page cache the
/// kernel drops before it OOM-kills, e.g. the model file just downloaded), or `None` when
/// there is no limit (`max`, or cgroup v1's "unlimited" of about 2^63).
pub fn cgroup_room(max: &str, current: &str, reclaimable: u64) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    if max >= 1 << 60 {
        return None;
    }
    let current: u64 = current.trim().parse().unwrap_or(0);
    Some(max.saturating_sub(current.saturating_sub(reclaimable)))
}

/// Bytes of f16 KV cache `parallel` sequences of `n_ctx` tokens need at most (saturating).
pub fn kv_cache_bytes(config: &ModelConfig, n_ctx: usize, parallel: usize) -> u64 {
    (config.kv_bytes_per_token() as u64)
        .saturating_mul(n_ctx as u64)
        .saturating_mul(parallel.max(1) as u64)
}

/// What the prompt cache may take and where the memory figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRam {
    /// `--cache-ram` as given (`None`: not given, the default applies).
    pub requested: Option<usize>,
    /// Bytes of the model file: without an explicit budget, the default leaves room for them.
    pub file_bytes: u64,
}

/// Refuse a context limit (`None`: the trained one) above the model's trained context unless
/// `allow_beyond_training`, or one whose KV cache for `parallel` sequences (plus an explicitly
/// requested prompt cache) exceeds `available` memory. The error names the figures and the
/// fix. `Ok`: the prompt cache's budget in bytes (0 for an embedding model, which has none).
pub fn check_context(
    config: &ModelConfig,
    n_ctx: Option<usize>,
    parallel: usize,
    cache: CacheRam,
    allow_beyond_training: bool,
    available: Option<&Available>,
) -> Result<usize, String> {
    let n_ctx = n_ctx.unwrap_or(config.n_ctx_train).max(1);
    if n_ctx > config.n_ctx_train && !allow_beyond_training {
        return Err(format!(
            "--ctx-size {n_ctx} is above the model's trained context of {train} tokens \
             ({arch}.context_length in the GGUF); past it the output degrades. Lower \
             --ctx-size (BITNET_CTX_SIZE) to at most {train}, or pass \
             --allow-ctx-beyond-training (BITNET_ALLOW_CTX_BEYOND_TRAINING=true) to use it \
             anyway",
            train = config.n_ctx_train,
            arch = config.arch,
        ));
    }
    // An embedding model keeps a cache only for the inputs of the pass in flight (at most one
    // of them longer than the pass's token budget, `Model::embed_with_budget`), whatever the
    // number of requests: one context's worth is its bound. It has no prompt cache.
    let (parallel, requested) = match config.kind {
        ModelKind::Embedding { .. } => (1, Some(0)),
        ModelKind::Generation => (parallel.max(1), cache.requested),
    };
    let Some(available) = available else {
        return Ok(requested.unwrap_or(DEFAULT_CACHE_RAM));
    };
    let kv = kv_cache_bytes(config, n_ctx, parallel);
    let explicit = requested.unwrap_or(0) as u64;
    let needed = kv.saturating_add(explicit);
    if needed > available.bytes && explicit > 0 {
        let per_token = (config.kv_bytes_per_token() as u64)
            .max(1)
            .saturating_mul(parallel as u64);
        let fits = available.bytes.saturating_sub(explicit) / per_token;
        return Err(format!(
            "--ctx-size {n_ctx} with --parallel {parallel} needs up to {} of KV cache, and \
             --cache-ram asks {} more for the prompt cache: more than the {} available ({}). \
             Lower --cache-ram (BITNET_CACHE_RAM; 0 disables the prompt cache), --ctx-size \
             (BITNET_CTX_SIZE) to at most {fits} or --parallel (BITNET_PARALLEL), or give the \
             server more memory",
            human_bytes(kv),
            human_bytes(explicit),
            human_bytes(available.bytes),
            available.source,
        ));
    }
    if needed > available.bytes {
        let per_token = (config.kv_bytes_per_token() as u64)
            .max(1)
            .saturating_mul(parallel as u64);
        let fits = available.bytes / per_token;
        return Err(format!(
            "--ctx-size {n_ctx} with --parallel {parallel} needs up to {} of KV cache \
             ({layers} layers × 2 × {kv} KV heads × {hd} head dim × 2 bytes × {n_ctx} tokens × \
             {parallel} slots), more than the {} available ({}). Lower --ctx-size \
             (BITNET_CTX_SIZE) to at most {fits} or --parallel (BITNET_PARALLEL), or give \
             the server more memory",
            human_bytes(needed),
            human_bytes(available.bytes),
            available.source,
            layers = config.n_layer,
            kv = config.n_head_kv,
            hd = config.head_dim,
        ));
    }
    Ok(requested.unwrap_or_else(|| {
        let left = available
            .bytes
            .saturating_sub(kv)
            .saturating_sub(cache.file_bytes)
            / 2;
        usize::try_from(left).map_or(DEFAULT_CACHE_RAM, |left| left.min(DEFAULT_CACHE_RAM))
    }))
}

/// [`check_context`] for the model file at `path` and this machine's [`available`] memory:
/// the prompt cache's budget, or why the settings cannot fit. When the file cannot be read as
/// a model (loading it reports that better): `Ok` with `cache_ram` or the default.
pub fn check_model_file(
    path: &Path,
    n_ctx: Option<usize>,
    parallel: usize,
    cache_ram: Option<usize>,
    allow_beyond_training: bool,
) -> Result<usize, String> {
    let unread = Ok(cache_ram.unwrap_or(DEFAULT_CACHE_RAM));
    let Ok(file) = GgufFile::open(path) else {
        return unread;
    };
    let Ok(config) = ModelConfig::from_gguf(&file) else {
        return unread;
    };
    let cache = CacheRam {
        requested: cache_ram,
        file_bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
    };
    check_context(
        &config,
        n_ctx,
        parallel,
        cache,
        allow_beyond_training,
        available().as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_GIVEN: CacheRam = CacheRam {
        requested: None,
        file_bytes: 0,
    };

    fn config() -> ModelConfig {
        ModelConfig {
            arch: "bitnet-b1.58".into(),
            name: None,
            n_vocab: 100,
            n_ctx_train: 4096,
            n_embd: 2560,
            n_layer: 30,
            n_head: 20,
            n_head_kv: 5,
            head_dim: 128,
            n_ff: 6912,
            rms_eps: 1e-5,
            rope_theta: 500_000.0,
            activation: bitnet_model::Activation::Relu2,
            graph: bitnet_model::Graph::BitnetB158,
            kind: bitnet_model::ModelKind::Generation,
            attn_scale: 1.0 / 128f32.sqrt(),
            embd_scale: 1.0,
        }
    }

    /// The 2B-4T shape: 75 KiB of KV cache per token, 1.17 GiB for 4 × 4096 tokens.
    #[test]
    fn context_is_bounded_by_training_and_by_memory() {
        let c = config();
        assert_eq!(kv_cache_bytes(&c, 4096, 4), 30 * 2 * 5 * 128 * 2 * 4096 * 4);
        let cgroup = Available {
            bytes: 2 << 30,
            source: "the cgroup limit".into(),
        };
        assert!(check_context(&c, None, 4, NOT_GIVEN, false, Some(&cgroup)).is_ok());
        let e = check_context(&c, Some(8192), 1, NOT_GIVEN, false, Some(&cgroup)).unwrap_err();
        assert!(e.contains("trained context of 4096"), "{e}");
        assert!(check_context(&c, Some(8192), 1, NOT_GIVEN, true, Some(&cgroup)).is_ok());
        let e = check_context(&c, Some(4096), 8, NOT_GIVEN, false, Some(&cgroup)).unwrap_err();
        assert!(
            e.contains("2.3 GiB") && e.contains("2.0 GiB available (the cgroup limit)"),
            "{e}"
        );
        assert!(e.contains("at most 3495"), "{e}");
        let e = check_context(
            &c,
            Some(usize::MAX),
            usize::MAX,
            NOT_GIVEN,
            true,
            Some(&cgroup),
        );
        assert!(e.is_err(), "saturates instead of overflowing");
        assert!(
            check_context(&c, Some(1 << 40), 4, NOT_GIVEN, true, None).is_ok(),
            "no figure, no bound"
        );
    }

    /// An embedding model holds one context's cache at most, so `--parallel` does not multiply
    /// the bound.
    #[test]
    fn an_embedding_model_needs_one_context_of_cache_whatever_the_parallelism() {
        let c = ModelConfig {
            kind: ModelKind::Embedding {
                dim: 2560,
                pooling: bitnet_model::Pooling::Last,
                pooling_defaulted: false,
            },
            ..config()
        };
        let cgroup = Available {
            bytes: 2 << 30,
            source: "the cgroup limit".into(),
        };
        assert!(check_context(&c, Some(4096), 8, NOT_GIVEN, false, Some(&cgroup)).is_ok());
        assert!(check_context(&config(), Some(4096), 8, NOT_GIVEN, false, Some(&cgroup)).is_err());
    }

    /// An explicit --cache-ram must fit beside the KV cache; the default shrinks to half of
    /// what is left after the KV cache and the model file.
    #[test]
    fn the_prompt_cache_budget_is_counted_with_the_kv_cache() {
        let c = config();
        let kv = kv_cache_bytes(&c, 4096, 4) as usize; // 1.17 GiB
        let cgroup = Available {
            bytes: 2 << 30,
            source: "the cgroup limit".into(),
        };
        let asked = |bytes: usize, file_bytes: u64| CacheRam {
            requested: Some(bytes),
            file_bytes,
        };
        let e =
            check_context(&c, Some(4096), 4, asked(1 << 30, 0), false, Some(&cgroup)).unwrap_err();
        assert!(
            e.contains("--cache-ram asks 1.0 GiB more") && e.contains("BITNET_CACHE_RAM"),
            "{e}"
        );
        assert_eq!(
            check_context(
                &c,
                Some(4096),
                4,
                asked(512 << 20, 1 << 30),
                false,
                Some(&cgroup)
            ),
            Ok(512 << 20),
            "an explicit budget is not lowered for the file"
        );
        assert_eq!(
            check_context(&c, Some(4096), 4, asked(0, 0), false, Some(&cgroup)),
            Ok(0)
        );
        // Not given: 1 GiB when it fits, else half of what is left, else nothing.
        assert_eq!(
            check_context(&c, Some(4096), 4, NOT_GIVEN, false, Some(&cgroup)),
            Ok(((2 << 30) - kv) / 2)
        );
        let with_file = CacheRam {
            requested: None,
            file_bytes: 1 << 30,
        };
        assert_eq!(
            check_context(&c, Some(4096), 4, with_file, false, Some(&cgroup)),
            Ok(0)
        );
        let roomy = Available {
            bytes: 16 << 30,
            source: "MemAvailable".into(),
        };
        assert_eq!(
            check_context(&c, Some(4096), 4, with_file, false, Some(&roomy)),
            Ok(DEFAULT_CACHE_RAM)
        );
        assert_eq!(
            check_context(&c, Some(4096), 4, NOT_GIVEN, false, None),
            Ok(DEFAULT_CACHE_RAM),
            "no figure: the default"
        );
        // An embedding model has no prompt cache, whatever was asked.
        let embed = ModelConfig {
            kind: ModelKind::Embedding {
                dim: 2560,
                pooling: bitnet_model::Pooling::Last,
                pooling_defaulted: false,
            },
            ..config()
        };
        assert_eq!(
            check_context(
                &embed,
                Some(4096),
                4,
                asked(1 << 30, 0),
                false,
                Some(&cgroup)
            ),
            Ok(0)
        );
    }

    #[test]
    fn reads_meminfo_and_cgroup_figures() {
        let meminfo = "MemTotal:       16000000 kB\nMemFree: 1 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(8_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_room("max\n", "100\n", 0), None);
        assert_eq!(cgroup_room("9223372036854771712\n", "5\n", 0), None);
        assert_eq!(
            cgroup_room("3221225472\n", "1073741824\n", 0),
            Some(2 << 30)
        );
        assert_eq!(
            cgroup_room("3221225472\n", "1073741824\n", 1 << 30),
            Some(3 << 30)
        );
        assert_eq!(cgroup_room("100\n", "200\n", 0), Some(0));
        let stat = "anon 5\nfile 9\ninactive_file 7\nactive_file 2\n";
        assert_eq!(stat_value(stat, "inactive_file"), Some(7));
        assert_eq!(stat_value(stat, "nope"), None);
    }
}
