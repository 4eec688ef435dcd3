//! What the machine can hold, and the `--ctx-size` bound it implies.
//!
//! Each sequence's KV cache grows on demand up to the context limit (`model::KvCache`), so an
//! oversized `--ctx-size` does not fail at load: it fails later, when one long request makes
//! the cache outgrow memory and the allocator aborts the process (or the kernel OOM-kills it).
//! [`check_context`] refuses such a limit up front, as well as one above the model's trained
//! context unless that is explicitly allowed.
//!
//! Available memory is the smaller of `MemAvailable` (/proc/meminfo) and the room left under
//! the cgroup's limit (v2 `memory.max` − `memory.current` + reclaimable `inactive_file`, or v1
//! `memory.limit_in_bytes` − `memory.usage_in_bytes`): in a container the cgroup limit is what
//! the OOM killer enforces. The bound covers the KV cache only; the weights are a mapped file.
//!
//! This module does NOT allocate the cache or load the model.

use std::path::Path;

use crate::health::human_bytes;
use bitnet_gguf::GgufFile;
use bitnet_model::{ModelConfig, ModelKind};

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

/// Refuse a context limit (`None`: the trained one) above the model's trained context unless
/// `allow_beyond_training`, or one whose KV cache for `parallel` sequences exceeds `available`
/// memory. The error names the figures and the fix.
pub fn check_context(
    config: &ModelConfig,
    n_ctx: Option<usize>,
    parallel: usize,
    allow_beyond_training: bool,
    available: Option<&Available>,
) -> Result<(), String> {
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
    let Some(available) = available else {
        return Ok(());
    };
    // An embedding model keeps a cache only for the inputs of the pass in flight (at most one
    // of them longer than the pass's token budget, `Model::embed_with_budget`), whatever the
    // number of requests: one context's worth is its bound.
    let parallel = match config.kind {
        ModelKind::Embedding { .. } => 1,
        ModelKind::Generation => parallel.max(1),
    };
    let needed = kv_cache_bytes(config, n_ctx, parallel);
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
    Ok(())
}

/// [`check_context`] for the model file at `path` and this machine's [`available`] memory.
/// `Ok` when the file cannot be read as a model: loading it reports that better.
pub fn check_model_file(
    path: &Path,
    n_ctx: Option<usize>,
    parallel: usize,
    allow_beyond_training: bool,
) -> Result<(), String> {
    let Ok(file) = GgufFile::open(path) else {
        return Ok(());
    };
    let Ok(config) = ModelConfig::from_gguf(&file) else {
        return Ok(());
    };
    check_context(
        &config,
        n_ctx,
        parallel,
        allow_beyond_training,
        available().as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_context(&c, None, 4, false, Some(&cgroup)).is_ok());
        let e = check_context(&c, Some(8192), 1, false, Some(&cgroup)).unwrap_err();
        assert!(e.contains("trained context of 4096"), "{e}");
        assert!(check_context(&c, Some(8192), 1, true, Some(&cgroup)).is_ok());
        let e = check_context(&c, Some(4096), 8, false, Some(&cgroup)).unwrap_err();
        assert!(
            e.contains("2.3 GiB") && e.contains("2.0 GiB available (the cgroup limit)"),
            "{e}"
        );
        assert!(e.contains("at most 3495"), "{e}");
        let e = check_context(&c, Some(usize::MAX), usize::MAX, true, Some(&cgroup));
        assert!(e.is_err(), "saturates instead of overflowing");
        assert!(
            check_context(&c, Some(1 << 40), 4, true, None).is_ok(),
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
        assert!(check_context(&c, Some(4096), 8, false, Some(&cgroup)).is_ok());
        assert!(check_context(&config(), Some(4096), 8, false, Some(&cgroup)).is_err());
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
