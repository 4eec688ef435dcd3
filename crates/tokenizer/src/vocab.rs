//! Building a GGUF-style byte-level BPE vocabulary (token strings, token types, merges) from a
//! tiktoken-style ranked vocabulary, where a token's rank is its id (LLaMA-3).
//!
//! Used by `cargo xtask gen-model` to give synthetic models the real LLaMA-3 vocabulary, and by
//! tokenizer tests. It does not tokenize anything; see the parent module for that.

use super::bytes::bytes_to_token_text;
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp token types as stored in `tokenizer.ggml.token_type`.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// A special (control) token such as `<|eot_id|>`.
pub const TOKEN_TYPE_CONTROL: i32 = 3;

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
