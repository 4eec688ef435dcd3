//! Building GGUF tokenizer metadata for synthetic model files and tests:
//!
//! * [`RankedVocab`] — a tiktoken-style ranked byte vocabulary (rank == id: LLaMA-3, Qwen2/3)
//!   to byte-level token strings, types and merges ([`GgufVocab`]).
//! * [`SpmVocab`] — a SentencePiece BPE vocabulary (pieces, scores, types) to the GGUF form
//!   Microsoft's Gemma 3 converter writes (`"gpt2"` + `"default"` + merges) or the classic
//!   llama.cpp form (`"llama"` + scores).
//! * [`TokenizerMeta`] — a [`GgufVocab`] plus the other `tokenizer.ggml.*` keys a file needs
//!   (model, pre-tokenizer, scores, BOS/EOS and whether to add them), with
//!   [`qwen3_embedding`] and [`gemma3_embedding`] giving what the published embedding files
//!   carry.
//!
//! Used by `cargo xtask gen-model` to give synthetic models real (or, for Gemma, synthetic)
//! vocabularies, and by tokenizer tests. It does not tokenize anything; see the parent module.

use super::bytes::bytes_to_token_text;
use super::model::TokenizerData;
use bitnet_gguf::{Array, Value};
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp token types as stored in `tokenizer.ggml.token_type`.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// The unknown token (`<unk>`).
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// A special (control) token such as `<|eot_id|>`.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// A user-defined token, matched in text wherever it appears.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// A padding entry (`[PAD151669]`) past the tokenizer's real vocabulary.
pub const TOKEN_TYPE_UNUSED: i32 = 5;
/// A SentencePiece byte token (`<0x41>`).
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// Qwen3's `<|endoftext|>`, which the embedding files append as EOS (last-token pooling).
pub const QWEN3_ENDOFTEXT: u32 = 151_643;
/// Gemma's `<bos>` and `<eos>` ids (the synthetic vocabulary keeps them).
pub const GEMMA_BOS: u32 = 2;
pub const GEMMA_EOS: u32 = 1;

/// A vocabulary as raw token bytes by id; rank == id for the ordinary tokens.
#[derive(Debug, Clone)]
pub struct RankedVocab {
    /// Token bytes by id (for specials: their text, e.g. `<|eot_id|>`).
    pub tokens: Vec<Vec<u8>>,
    /// Whether id is a special token.
    pub special: Vec<bool>,
}

/// The three GGUF tokenizer arrays.
#[derive(Debug, Clone)]
pub struct GgufVocab {
    /// `tokenizer.ggml.tokens`: byte-mapped text for ordinary tokens, plain text for specials.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"left right"` in priority order.
    pub merges: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("cannot read vocabulary dump {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "vocabulary dump {path} is malformed ({what}); regenerate it with xtask/py/dump_llama3_vocab.py"
    )]
    Malformed { path: String, what: &'static str },
    #[error(
        "SentencePiece vocabulary {path} is malformed ({what}); regenerate it with \
         xtask/py/gemma_synthetic_vocab.py"
    )]
    MalformedSpm { path: String, what: String },
    #[error(
        "the vocabulary has {have} tokens but the file must have {want}; a vocabulary can only \
         be padded up, not cut"
    )]
    TooLarge { have: usize, want: usize },
}

/// A SentencePiece BPE vocabulary: pieces (`▁` for space, `<0xXX>` byte pieces), their scores
/// and SentencePiece piece types (the same numbers as llama.cpp's token types).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SpmVocab {
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

/// A GGUF vocabulary with the rest of the `tokenizer.ggml.*` metadata a file needs.
#[derive(Debug, Clone)]
pub struct TokenizerMeta {
    /// `tokenizer.ggml.tokens`, `token_type`, `merges` (merges empty for `"llama"`).
    pub vocab: GgufVocab,
    /// `tokenizer.ggml.model`: `"gpt2"` or `"llama"`.
    pub model: String,
    /// `tokenizer.ggml.pre`, if the file names one.
    pub pre: Option<String>,
    /// `tokenizer.ggml.scores` (empty: not written).
    pub scores: Vec<f32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: bool,
}

impl TokenizerMeta {
    /// The data [`super::Tokenizer::new`] takes, as `TokenizerData::from_gguf` would read it
    /// back from a file written with [`TokenizerMeta::gguf_kvs`].
    pub fn to_tokenizer_data(&self) -> TokenizerData {
        TokenizerData {
            tokens: self.vocab.tokens.clone(),
            token_types: self.vocab.token_types.clone(),
            merges: self.vocab.merges.clone(),
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            add_bos: self.add_bos,
            add_eos: self.add_eos,
            model: Some(self.model.clone()),
            pre: self.pre.clone(),
            scores: self.scores.clone(),
            chat_template: None,
        }
    }

    /// Every `tokenizer.ggml.*` key and value to write into a GGUF file (in llama.cpp's
    /// order); a writer that already wrote some of these keys must drop its own.
    pub fn gguf_kvs(&self) -> Vec<(String, Value)> {
        fn str_array<'a>(items: impl Iterator<Item = &'a String>) -> Value {
            Value::Array(Array::String(items.collect()))
        }
        let i32_array = |items: &[i32]| Value::Array(Array::I32(items.to_vec()));
        let f32_array = |items: &[f32]| Value::Array(Array::F32(items.to_vec()));
        let mut kv = vec![(
            "tokenizer.ggml.model".to_string(),
            Value::String(self.model.clone()),
        )];
        if let Some(pre) = &self.pre {
            kv.push(("tokenizer.ggml.pre".into(), Value::String(pre.clone())));
        }
        kv.push((
            "tokenizer.ggml.tokens".into(),
            str_array(self.vocab.tokens.iter()),
        ));
        if !self.scores.is_empty() {
            kv.push(("tokenizer.ggml.scores".into(), f32_array(&self.scores)));
        }
        kv.push((
            "tokenizer.ggml.token_type".into(),
            i32_array(&self.vocab.token_types),
        ));
        if !self.vocab.merges.is_empty() {
            kv.push((
                "tokenizer.ggml.merges".into(),
                str_array(self.vocab.merges.iter()),
            ));
        }
        if let Some(id) = self.bos_id {
            kv.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(id)));
        }
        if let Some(id) = self.eos_id {
            kv.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(id)));
        }
        kv.push((
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(self.add_bos),
        ));
        kv.push((
            "tokenizer.ggml.add_eos_token".into(),
            Value::Bool(self.add_eos),
        ));
        kv
    }
}

/// Pads a vocabulary to `n_vocab` entries with `[PAD<id>]` tokens of type UNUSED, as Microsoft's
/// converters do when the model's embedding has more rows than the tokenizer has tokens.
fn pad_vocab(v: &mut GgufVocab, n_vocab: usize) -> Result<(), VocabError> {
    if v.tokens.len() > n_vocab {
        return Err(VocabError::TooLarge {
            have: v.tokens.len(),
            want: n_vocab,
        });
    }
    for id in v.tokens.len()..n_vocab {
        v.tokens.push(format!("[PAD{id}]"));
        v.token_types.push(TOKEN_TYPE_UNUSED);
    }
    Ok(())
}

/// The tokenizer metadata of Microsoft's qwen3 embedding file, from the Qwen vocabulary (a
/// [`RankedVocab`] read from `xtask/py/dump_llama3_vocab.py FILE qwen3`), padded to `n_vocab`
/// tokens (151,936 in the published file): byte-level BPE, `pre = "qwen2"`, no BOS, EOS
/// `<|endoftext|>` appended (`add_eos_token`).
pub fn qwen3_embedding(qwen: &RankedVocab, n_vocab: usize) -> Result<TokenizerMeta, VocabError> {
    let mut vocab = qwen.to_gguf();
    pad_vocab(&mut vocab, n_vocab)?;
    let eos = vocab
        .tokens
        .iter()
        .position(|t| t == "<|endoftext|>")
        .map(|i| i as u32);
    Ok(TokenizerMeta {
        vocab,
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        scores: Vec::new(),
        bos_id: None,
        eos_id: eos,
        add_bos: false,
        add_eos: eos.is_some(),
    })
}

/// The tokenizer metadata of Microsoft's gemma3 embedding file, built from a SentencePiece BPE
/// vocabulary (the synthetic one in `crates/tokenizer/tests/data/gemma/vocab.json` — Gemma 3's
/// real one is not available without Hugging Face access) and padded to `n_vocab` tokens:
/// `model = "gpt2"`, `pre = "default"`, merges, BOS `<bos>` added, no EOS.
pub fn gemma3_embedding(spm: &SpmVocab, n_vocab: usize) -> Result<TokenizerMeta, VocabError> {
    let mut vocab = spm.to_gguf_merges();
    pad_vocab(&mut vocab, n_vocab)?;
    let id = |name: &str| spm.pieces.iter().position(|p| p == name).map(|i| i as u32);
    let bos = id("<bos>");
    Ok(TokenizerMeta {
        vocab,
        model: "gpt2".into(),
        pre: Some("default".into()),
        scores: Vec::new(),
        bos_id: bos,
        eos_id: id("<eos>"),
        add_bos: bos.is_some(),
        add_eos: false,
    })
}

impl SpmVocab {
    /// Reads the JSON written by `xtask/py/gemma_synthetic_vocab.py`
    /// (`{"pieces": [...], "scores": [...], "types": [...]}`).
    pub fn read_json(path: &Path) -> Result<Self, VocabError> {
        let p = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| VocabError::Io {
            path: p.clone(),
            source,
        })?;
        let v: SpmVocab = serde_json::from_slice(&data).map_err(|e| VocabError::MalformedSpm {
            path: p.clone(),
            what: e.to_string(),
        })?;
        if v.scores.len() != v.pieces.len() || v.types.len() != v.pieces.len() {
            return Err(VocabError::MalformedSpm {
                path: p,
                what: format!(
                    "{} pieces, {} scores, {} types",
                    v.pieces.len(),
                    v.scores.len(),
                    v.types.len()
                ),
            });
        }
        Ok(v)
    }

    /// The classic llama.cpp form: pieces as they are, scores, SentencePiece types; no merges
    /// (`tokenizer.ggml.model = "llama"`).
    pub fn to_gguf_scores(&self) -> (GgufVocab, Vec<f32>) {
        (
            GgufVocab {
                tokens: self.pieces.clone(),
                token_types: self.types.clone(),
                merges: Vec::new(),
            },
            self.scores.clone(),
        )
    }

    /// The form Microsoft's Gemma 3 converter writes (from the Hugging Face tokenizer): pieces
    /// as they are, byte pieces typed NORMAL (they are ordinary vocabulary entries there),
    /// control and unknown pieces CONTROL, user-defined pieces CONTROL if they look special
    /// (`<…>`, `[…]`) else USER_DEFINED with `▁` written as a space; merges as Hugging Face's
    /// SentencePiece conversion derives them: every split of a normal piece into two normal
    /// pieces, ordered by the merged piece's score (then id), then by the parts' ids.
    pub fn to_gguf_merges(&self) -> GgufVocab {
        let mut tokens = Vec::with_capacity(self.pieces.len());
        let mut token_types = Vec::with_capacity(self.pieces.len());
        for (piece, &ty) in self.pieces.iter().zip(&self.types) {
            let (text, t) = match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => (piece.clone(), TOKEN_TYPE_CONTROL),
                TOKEN_TYPE_USER_DEFINED if looks_special(piece) => {
                    (piece.clone(), TOKEN_TYPE_CONTROL)
                }
                TOKEN_TYPE_USER_DEFINED => {
                    (piece.replace('\u{2581}', " "), TOKEN_TYPE_USER_DEFINED)
                }
                _ => (piece.clone(), TOKEN_TYPE_NORMAL),
            };
            tokens.push(text);
            token_types.push(t);
        }
        let normal: HashMap<&str, usize> = self
            .pieces
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.types[i] == TOKEN_TYPE_NORMAL)
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut order: Vec<usize> = normal.values().copied().collect();
        order.sort_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]).then(a.cmp(&b)));
        let mut merges = Vec::new();
        for (rank, &id) in order.iter().enumerate() {
            let piece = self.pieces[id].as_str();
            let mut parts: Vec<(usize, usize)> = piece
                .char_indices()
                .skip(1)
                .filter_map(|(cut, _)| {
                    Some((*normal.get(&piece[..cut])?, *normal.get(&piece[cut..])?))
                })
                .collect();
            parts.sort_unstable();
            merges.extend(parts.into_iter().map(|(l, r)| (rank, l, r)));
        }
        let merges = merges
            .into_iter()
            .map(|(_, l, r)| format!("{} {}", self.pieces[l], self.pieces[r]))
            .collect();
        GgufVocab {
            tokens,
            token_types,
            merges,
        }
    }
}

/// Microsoft's converters type an added token that looks like `<…>`, `<|…|>` or `[…]` as
/// CONTROL.
fn looks_special(t: &str) -> bool {
    (t.starts_with('<') && t.ends_with('>')) || (t.starts_with('[') && t.ends_with(']'))
}

impl RankedVocab {
    /// Reads the `BNVOCAB1` dump written by `xtask/py/dump_llama3_vocab.py`.
    pub fn read_dump(path: &Path) -> Result<Self, VocabError> {
        let p = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| VocabError::Io {
            path: p.clone(),
            source,
        })?;
        let bad = |what| VocabError::Malformed {
            path: p.clone(),
            what,
        };
        let rest = data
            .strip_prefix(b"BNVOCAB1")
            .ok_or_else(|| bad("bad magic"))?;
        let (count, mut rest) = split_u32(rest).ok_or_else(|| bad("truncated header"))?;
        if count as usize > rest.len() / 5 {
            return Err(bad("token count larger than the file"));
        }
        let mut tokens = Vec::with_capacity(count as usize);
        let mut special = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (&flag, r) = rest.split_first().ok_or_else(|| bad("truncated token"))?;
            let (len, r) = split_u32(r).ok_or_else(|| bad("truncated token"))?;
            if len as usize > r.len() {
                return Err(bad("token length past the end"));
            }
            let (bytes, r) = r.split_at(len as usize);
            tokens.push(bytes.to_vec());
            special.push(flag != 0);
            rest = r;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self { tokens, special })
    }

    /// Token strings, types and merges as a GGUF file stores them.
    ///
    /// Merges are derived from ranks the way Hugging Face converts tiktoken vocabularies (which
    /// is how LLaMA-3's 280,147 merges arose): every split of a token into two tokens is a merge,
    /// ordered by the rank of the merged token, then by the ranks of the left and right parts.
    pub fn to_gguf(&self) -> GgufVocab {
        let mut rank: HashMap<&[u8], usize> = HashMap::with_capacity(self.tokens.len());
        for (id, t) in self.tokens.iter().enumerate() {
            if !self.special[id] {
                rank.insert(t.as_slice(), id);
            }
        }
        let mut merges: Vec<(usize, usize, usize)> = Vec::new();
        for (id, t) in self.tokens.iter().enumerate() {
            if self.special[id] || t.len() < 2 {
                continue;
            }
            for i in 1..t.len() {
                if let (Some(&l), Some(&r)) = (rank.get(&t[..i]), rank.get(&t[i..])) {
                    merges.push((id, l, r));
                }
            }
        }
        merges.sort_unstable();
        let tokens = self
            .tokens
            .iter()
            .zip(&self.special)
            .map(|(t, &s)| {
                if s {
                    String::from_utf8_lossy(t).into_owned()
                } else {
                    bytes_to_token_text(t)
                }
            })
            .collect();
        let token_types = self
            .special
            .iter()
            .map(|&s| {
                if s {
                    TOKEN_TYPE_CONTROL
                } else {
                    TOKEN_TYPE_NORMAL
                }
            })
            .collect();
        let merges = merges
            .into_iter()
            .map(|(_, l, r)| {
                format!(
                    "{} {}",
                    bytes_to_token_text(&self.tokens[l]),
                    bytes_to_token_text(&self.tokens[r])
                )
            })
            .collect();
        GgufVocab {
            tokens,
            token_types,
            merges,
        }
    }
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_ranks() {
        let toks: Vec<&[u8]> = vec![b"a", b"b", b"c", b"ab", b"abc", b"bc"];
        let v = RankedVocab {
            tokens: toks.iter().map(|t| t.to_vec()).collect(),
            special: vec![false; toks.len()],
        };
        let g = v.to_gguf();
        // "abc" (rank 4) splits as ab+c and a+bc; ordered by the parts' ranks.
        assert_eq!(g.merges, vec!["a b", "a bc", "ab c", "b c"]);
    }
}
