//! `bitnet-server inspect FILE`: what a GGUF file holds, and whether this engine can run it.

use anyhow::Result;
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_model::ModelConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print every tensor (default: the first 40 and a summary).
    #[arg(long)]
    pub all_tensors: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let f = GgufFile::open(&args.file)?;
    print!("{}", render(&f, args.all_tensors));
    Ok(())
}

/// The report as text (separate from I/O for testing).
pub fn render(f: &GgufFile, all_tensors: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "GGUF v{}  {} bytes  alignment {}  data at byte {}",
        f.version(),
        f.file_size(),
        f.alignment(),
        f.data_offset()
    );
    let _ = writeln!(s, "\nmetadata ({} keys):", f.metadata().len());
    for (k, v) in f.metadata() {
        let _ = writeln!(s, "  {k:<48} {:<22} {v}", v.type_description());
    }
    let _ = writeln!(s, "\ntensors ({}):", f.tensors().len());
    let _ = writeln!(
        s,
        "  {:<32} {:<6} {:<18} {:>12} {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    let shown = if all_tensors { f.tensors().len() } else { 40 };
    for t in f.tensors().iter().take(shown) {
        let shape = format!("{:?}", t.dims);
        let _ = writeln!(
            s,
            "  {:<32} {:<6} {:<18} {:>12} {:>12}",
            t.name,
            t.ty.name(),
            shape,
            t.size,
            t.offset
        );
    }
    if f.tensors().len() > shown {
        let _ = writeln!(s, "  … {} more (--all-tensors)", f.tensors().len() - shown);
    }
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let total: u64 = f.tensors().iter().map(|t| t.size).sum();
    let params: u64 = f.tensors().iter().map(|t| t.n_elements()).sum();
    let types: Vec<String> = by_type
        .iter()
        .map(|(k, (n, b))| format!("{k}: {n} ({:.2} MiB)", *b as f64 / 1048576.0))
        .collect();
    let _ = writeln!(
        s,
        "  total {:.2} MiB of tensor data, {:.3} B parameters; {}",
        total as f64 / 1048576.0,
        params as f64 / 1e9,
        types.join(", ")
    );
    let _ = writeln!(s);
    match ModelConfig::from_gguf(f) {
        Ok(c) => {
            let ternary = f
                .tensors()
                .iter()
                .find(|t| t.ty.is_ternary())
                .map_or(GgmlType::I2S.name(), |t| t.ty.name());
            let _ = writeln!(
                s,
                "model: {} ({}), {} layers, d={}, heads {}/{} (head dim {}), ffn {}, vocab {}, context {}, rope θ {}, eps {}, {:?}, {} weights",
                c.name.as_deref().unwrap_or("unnamed"),
                c.arch,
                c.n_layer,
                c.n_embd,
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                c.n_ff,
                c.n_vocab,
                c.n_ctx_train,
                c.rope_theta,
                c.rms_eps,
                c.activation,
                ternary
            );
            let _ = writeln!(
                s,
                "KV cache: {} KiB per token ({:.0} MiB at full context)",
                c.kv_bytes_per_token() / 1024,
                (c.kv_bytes_per_token() * c.n_ctx_train) as f64 / 1048576.0
            );
        }
        Err(e) => {
            let _ = writeln!(s, "not runnable by this engine: {e}");
        }
    }
    s
}
