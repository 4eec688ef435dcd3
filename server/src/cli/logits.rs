//! `bitnet-server logits`: logits for a token-id sequence fed in one batch (teacher forcing).
//! This is how we cross-check against other engines, so no tokenization is involved.

use super::model_args::ModelArgs;
use anyhow::{Result, bail};
use bitnet_model::{Logits, SeqInput};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, e.g. 128000,9906,1917.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Print every position's logits, not only the last.
    #[arg(long)]
    pub all_positions: bool,
    /// Full logits as JSON ({"tokens", "n_vocab", "positions": [{"pos", "argmax", "logits"}]});
    /// otherwise the top 10 per position.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &LogitsArgs) -> Result<()> {
    if args.tokens.is_empty() {
        bail!("--tokens is empty; give at least one token id");
    }
    let (_file, model) = args.model.load()?;
    let mut cache = model.new_cache();
    let want = if args.all_positions {
        Logits::All
    } else {
        Logits::Last
    };
    let mut batch = [SeqInput {
        cache: &mut cache,
        tokens: &args.tokens,
        logits: want,
    }];
    let rows = model.forward(&mut batch)?.remove(0);
    let nv = model.config.n_vocab;
    let first = if args.all_positions {
        0
    } else {
        args.tokens.len() - 1
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    if args.json {
        let positions: Vec<serde_json::Value> = rows
            .chunks(nv)
            .enumerate()
            .map(|(i, row)| {
                serde_json::json!({
                    "pos": first + i,
                    "argmax": crate::sampling::argmax(row),
                    "logits": row,
                })
            })
            .collect();
        let doc =
            serde_json::json!({ "tokens": args.tokens, "n_vocab": nv, "positions": positions });
        serde_json::to_writer(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        for (i, row) in rows.chunks(nv).enumerate() {
            let mut idx: Vec<usize> = (0..nv).collect();
            idx.sort_unstable_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<String> = idx[..10.min(nv)]
                .iter()
                .map(|&t| format!("{t}:{:.4}", row[t]))
                .collect();
            writeln!(
                out,
                "pos {} (token {}): {}",
                first + i,
                args.tokens[first + i],
                top.join(" ")
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
