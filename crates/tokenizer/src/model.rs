//! The byte-level BPE tokenizer: built from GGUF-style tokenizer data, it encodes text to token
//! ids and decodes ids to text.
//!
//! Encoding: special tokens are cut out first (see [`super::special`]), each ordinary stretch is
//! pre-split (see [`super::pretokenize`]), and each piece is looked up whole — LLaMA-3's
//! `ignore_merges`: a piece that is itself a token is emitted as is — or else BPE-merged from its
//! bytes (see [`super::bpe`]). Decoding concatenates token bytes.
//!
//! This module does not read GGUF files (the caller fills [`TokenizerData`] from the metadata),
//! does not normalise text (LLaMA-3 has no normaliser) and supports only byte-level vocabularies
//! (`tokenizer.ggml.model = "gpt2"`) with the LLaMA-3 pre-split.

use super::bpe::{Merges, Scratch};
use super::bytes::char_to_byte;
use super::lookup::{BytesIndex, TokenStore};
use super::pretokenize::llama3_pieces;
use super::special::{Segment, SpecialMatcher};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    // 5 is UNUSED: nothing here treats it specially.
    pub const BYTE: i32 = 6;
}

/// Names of end-of-turn tokens that end generation besides EOS (llama.cpp's list, in part).
const END_OF_TURN_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
];

/// Tokenizer metadata as stored in a GGUF file (`tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct TokenizerData {
    /// `tokenizer.ggml.tokens`: GPT-2 byte-mapped text for ordinary tokens, plain text for
    /// special (control / user-defined) ones.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token; empty means all normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
    /// `tokenizer.ggml.pre`; absent means the LLaMA-3 split (BitNet 2B-4T's file lacks the key).
    pub pre: Option<String>,
    /// `tokenizer.chat_template`, carried along for [`super::chat::ChatTemplate`].
    pub chat_template: Option<String>,
}

/// Pre-tokenizer names (`tokenizer.ggml.pre`) that mean the LLaMA-3 split.
pub const LLAMA3_PRE_NAMES: &[&str] = &["llama3", "llama-bpe", "llama-v3"];

/// Why tokenizer data was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the tokenizer has no tokens (tokenizer.ggml.tokens is empty)")]
    EmptyVocabulary,
    #[error("the tokenizer has {count} tokens, more than token ids can address (2^32 - 1)")]
    TooManyTokens { count: usize },
    #[error("the tokenizer has {count} merges, more than ranks can address (2^32 - 1)")]
    TooManyMerges { count: usize },
    #[error(
        "tokenizer.ggml.token_type has {types} entries but tokenizer.ggml.tokens has {tokens}; \
         the file's tokenizer metadata is inconsistent (re-convert the model)"
    )]
    TypeCountMismatch { tokens: usize, types: usize },
    #[error(
        "token {id} has token type {value}, which is not one of llama.cpp's types 0..=6 \
         (tokenizer.ggml.token_type is corrupt)"
    )]
    UnknownTokenType { id: u32, value: i32 },
    #[error(
        "merge #{index} {merge:?} is not two tokens separated by a space \
         (tokenizer.ggml.merges is corrupt)"
    )]
    MalformedMerge { index: usize, merge: String },
    #[error(
        "merge #{index} {merge:?} uses {part:?}, which is not an ordinary token of the vocabulary \
         (tokenizer.ggml.merges does not belong to tokenizer.ggml.tokens)"
    )]
    MergeUnknownToken {
        index: usize,
        merge: String,
        part: String,
    },
    #[error(
        "merge #{index} {merge:?} produces a token that is not in the vocabulary \
         (tokenizer.ggml.merges does not belong to tokenizer.ggml.tokens)"
    )]
    MergeResultMissing { index: usize, merge: String },
    #[error("the {what} token id {id} is out of range: the vocabulary has {vocab_size} tokens")]
    IdOutOfRange {
        what: &'static str,
        id: u32,
        vocab_size: usize,
    },
    #[error(
        "tokenizer.ggml.add_bos_token is true but there is no tokenizer.ggml.bos_token_id; \
         set the BOS id or turn add_bos_token off"
    )]
    MissingBos,
    #[error(
        "pre-tokenizer {name:?} (tokenizer.ggml.pre) is not supported; supported: {} \
         (or no tokenizer.ggml.pre key, which means llama3)",
        LLAMA3_PRE_NAMES.join(", ")
    )]
    UnknownPreTokenizer { name: String },
    #[error(
        "byte 0x{byte:02X} has no token ({:?}), so this is not a complete byte-level BPE \
         vocabulary (tokenizer.ggml.model must be \"gpt2\" for this tokenizer)",
        super::bytes::byte_to_char(*byte).to_string()
    )]
    MissingByteToken { byte: u8 },
}

/// A byte-level BPE tokenizer (LLaMA-3 style). Share it (`Arc`): `Send + Sync`, no interior
/// state; cloning copies the vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    store: TokenStore,
    types: Vec<i32>,
    /// Ordinary tokens by bytes.
    index: BytesIndex,
    byte_tokens: [u32; 256],
    merges: Merges,
    /// User-defined tokens: always matched in text.
    user_defined: SpecialMatcher,
    /// Control, unknown and user-defined tokens: matched when parsing specials.
    all_special: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    eog: Vec<u32>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    // The derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

fn is_special_type(t: i32) -> bool {
    matches!(
        t,
        token_type::UNKNOWN | token_type::CONTROL | token_type::USER_DEFINED
    )
}

impl Tokenizer {
    /// Builds a tokenizer, validating the data (see [`TokenizerError`] for what is checked).
    pub fn new(data: TokenizerData) -> Result<Self, TokenizerError> {
        let n = data.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if n >= u32::MAX as usize {
            return Err(TokenizerError::TooManyTokens { count: n });
        }
        match data.pre.as_deref() {
            None => {}
            Some(name) if LLAMA3_PRE_NAMES.contains(&name) => {}
            Some(name) => {
                return Err(TokenizerError::UnknownPreTokenizer {
                    name: name.to_string(),
                });
            }
        }
        let types = if data.token_types.is_empty() {
            vec![token_type::NORMAL; n]
        } else if data.token_types.len() != n {
            return Err(TokenizerError::TypeCountMismatch {
                tokens: n,
                types: data.token_types.len(),
            });
        } else {
            data.token_types
        };
        for (id, &t) in types.iter().enumerate() {
            if !(token_type::UNDEFINED..=token_type::BYTE).contains(&t) {
                return Err(TokenizerError::UnknownTokenType {
                    id: id as u32,
                    value: t,
                });
            }
        }
        for (what, id) in [("BOS", data.bos_id), ("EOS", data.eos_id)] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(TokenizerError::IdOutOfRange {
                    what,
                    id,
                    vocab_size: n,
                });
            }
        }
        if data.add_bos && data.bos_id.is_none() {
            return Err(TokenizerError::MissingBos);
        }

        // Token bytes. Ordinary tokens are byte-mapped; a token with a char outside the map
        // (not a byte-level token at all) is kept as its UTF-8 text and can only be decoded.
        let mut store = TokenStore::default();
        let mut index = BytesIndex::with_capacity(n);
        let mut buf = Vec::new();
        let mut specials = Vec::new();
        for (id, text) in data.tokens.iter().enumerate() {
            let id = id as u32;
            if is_special_type(types[id as usize]) {
                store.push(text.as_bytes());
                specials.push(id);
                continue;
            }
            buf.clear();
            if map_token_text(text, &mut buf) {
                store.push(&buf);
                if !buf.is_empty() {
                    index.insert(&store, id);
                }
            } else {
                store.push(text.as_bytes());
            }
        }
        let mut byte_tokens = [0u32; 256];
        for b in 0..=255u8 {
            byte_tokens[b as usize] = index
                .get(&store, &[b])
                .ok_or(TokenizerError::MissingByteToken { byte: b })?;
        }

        let merges = parse_merges(&data.merges, &store, &index)?;

        let special_entries = |filter: fn(i32) -> bool| {
            specials
                .iter()
                .filter(|&&id| filter(types[id as usize]))
                .map(|&id| (store.get(id).to_vec(), id))
                .collect::<Vec<_>>()
        };
        let user_defined = SpecialMatcher::new(special_entries(|t| t == token_type::USER_DEFINED));
        let all_special = SpecialMatcher::new(special_entries(is_special_type));

        let mut eog: Vec<u32> = data.eos_id.into_iter().collect();
        for &id in &specials {
            let text = store.get(id);
            if END_OF_TURN_NAMES.iter().any(|name| name.as_bytes() == text) {
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        Ok(Self {
            store,
            types,
            index,
            byte_tokens,
            merges,
            user_defined,
            all_special,
            bos: data.bos_id,
            eos: data.eos_id,
            add_bos: data.add_bos,
            eog,
            chat_template: data.chat_template,
        })
    }

    /// Number of tokens (ids are `0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.store.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model wants BOS prepended (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos_by_default(&self) -> bool {
        self.add_bos
    }

    /// Tokens that end generation: EOS and the end-of-turn tokens the vocabulary has
    /// (`<|eot_id|>`, `<|eom_id|>`, …), sorted. For BitNet 2B-4T: 128001 and 128009.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The raw bytes of a token (for special tokens: their text); empty for an unknown id.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.store.get(id)
    }

    /// The `tokenizer.ggml.token_type` of a token, if the id exists.
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.types.get(id as usize).copied()
    }

    /// Whether a token is a control or unknown token (`<|eot_id|>`, …), which streamed output
    /// usually leaves out. User-defined tokens are text and do not count.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(token_type::CONTROL | token_type::UNKNOWN)
        )
    }

    /// The id of the token whose text is exactly `text`: special tokens by their text (e.g.
    /// `"<|eot_id|>"`), ordinary tokens by the text their bytes spell.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        let bytes = text.as_bytes();
        self.all_special
            .exact(bytes)
            .or_else(|| self.index.get(&self.store, bytes))
    }

    /// `tokenizer.chat_template`, if the data had one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Encodes `text`. With `add_bos` the BOS token is prepended (if the vocabulary has one).
    /// With `parse_special`, control tokens written in the text (`<|eot_id|>`) become their ids;
    /// without it they are encoded as ordinary text. User-defined tokens are always matched.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            out.extend(self.bos);
        }
        let specials = if parse_special {
            &self.all_special
        } else {
            &self.user_defined
        };
        let mut scratch = EncodeScratch::default();
        specials.split(text, |seg| match seg {
            Segment::Special(id) => out.push(id),
            Segment::Text(t) => self.encode_ordinary_into(t, &mut scratch, &mut out),
        });
        out
    }

    fn encode_ordinary_into(&self, text: &str, scratch: &mut EncodeScratch, out: &mut Vec<u32>) {
        for piece in llama3_pieces(text) {
            let bytes = piece.as_bytes();
            // ignore_merges: a piece that is a token is emitted whole.
            if let Some(id) = self.index.get(&self.store, bytes) {
                out.push(id);
                continue;
            }
            scratch.symbols.clear();
            scratch
                .symbols
                .extend(bytes.iter().map(|&b| self.byte_tokens[b as usize]));
            self.merges.apply(&scratch.symbols, &mut scratch.bpe, out);
        }
    }

    /// Decodes ids to text. Byte sequences that are not valid UTF-8 (a character cut off at the
    /// end, or tokens that never form one) become U+FFFD, as do ids outside the vocabulary.
    /// Special tokens decode to their text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if (id as usize) < self.vocab_size() {
                bytes.extend_from_slice(self.store.get(id));
            } else {
                bytes.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

#[derive(Default)]
struct EncodeScratch {
    symbols: Vec<u32>,
    bpe: Scratch,
}

/// GPT-2 byte-mapped token text → bytes; false if a char is outside the byte map.
fn map_token_text(text: &str, out: &mut Vec<u8>) -> bool {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => return false,
        }
    }
    true
}

fn parse_merges(
    merges: &[String],
    store: &TokenStore,
    index: &BytesIndex,
) -> Result<Merges, TokenizerError> {
    if merges.len() >= u32::MAX as usize {
        return Err(TokenizerError::TooManyMerges {
            count: merges.len(),
        });
    }
    let mut table = Merges::with_capacity(merges.len());
    let mut left = Vec::new();
    let mut right = Vec::new();
    for (rank, merge) in merges.iter().enumerate() {
        // Like llama.cpp, split at the first space that is not the first byte.
        let split = merge
            .bytes()
            .enumerate()
            .skip(1)
            .find(|&(_, b)| b == b' ')
            .map(|(i, _)| i)
            .filter(|&i| i + 1 < merge.len());
        let Some(split) = split else {
            return Err(TokenizerError::MalformedMerge {
                index: rank,
                merge: merge.clone(),
            });
        };
        let (l_text, r_text) = (&merge[..split], &merge[split + 1..]);
        let lookup = |text: &str, buf: &mut Vec<u8>| {
            buf.clear();
            if map_token_text(text, buf) {
                index.get(store, buf)
            } else {
                None
            }
        };
        let unknown = |part: &str| TokenizerError::MergeUnknownToken {
            index: rank,
            merge: merge.clone(),
            part: part.to_string(),
        };
        let l = lookup(l_text, &mut left).ok_or_else(|| unknown(l_text))?;
        let r = lookup(r_text, &mut right).ok_or_else(|| unknown(r_text))?;
        left.extend_from_slice(&right);
        let merged = index
            .get(store, &left)
            .ok_or_else(|| TokenizerError::MergeResultMissing {
                index: rank,
                merge: merge.clone(),
            })?;
        table.insert(l, r, rank as u32, merged);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::bytes_to_token_text;

    /// 256 byte tokens, then "he", "ll", "hell", "hello", " w", then specials.
    fn toy() -> TokenizerData {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| bytes_to_token_text(&[b])).collect();
        let mut token_types = vec![token_type::NORMAL; 256];
        for t in ["he", "ll", "hell", "hello", " w"] {
            tokens.push(bytes_to_token_text(t.as_bytes()));
            token_types.push(token_type::NORMAL);
        }
        for (t, ty) in [
            ("<|bos|>", token_type::CONTROL),
            ("<|eot_id|>", token_type::CONTROL),
            ("<mask>", token_type::USER_DEFINED),
            ("<unk>", token_type::UNKNOWN),
        ] {
            tokens.push(t.to_string());
            token_types.push(ty);
        }
        TokenizerData {
            tokens,
            token_types,
            merges: ["h e", "l l", "he ll", "hell o", "Ġ w"]
                .map(String::from)
                .to_vec(),
            bos_id: Some(261),
            eos_id: Some(261),
            add_bos: true,
            pre: None,
            chat_template: Some("{{ x }}".into()),
        }
    }

    const HELLO: u32 = 259;
    const BOS: u32 = 261;
    const EOT: u32 = 262;
    const MASK: u32 = 263;
    const UNK: u32 = 264;

    fn err(data: TokenizerData) -> String {
        Tokenizer::new(data).unwrap_err().to_string()
    }

    #[test]
    fn encodes_with_merges_and_whole_pieces() {
        let tok = Tokenizer::new(toy()).unwrap();
        assert_eq!(tok.vocab_size(), 265);
        assert_eq!(tok.encode("hello", false, false), [HELLO]);
        assert_eq!(tok.encode("hello", true, false), [BOS, HELLO]);
        // " world": " w" merges; the rest are single bytes.
        let byte = |c: &str| tok.token_id(c).unwrap();
        assert_eq!(
            tok.encode(" world", false, false),
            [260, byte("o"), byte("r"), byte("l"), byte("d")]
        );
        assert_eq!(
            tok.decode(&tok.encode("hello world\n", false, false)),
            "hello world\n"
        );
        assert!(tok.add_bos_by_default());
        assert_eq!(tok.chat_template(), Some("{{ x }}"));
    }

    #[test]
    fn debug_output_is_a_summary() {
        let tok = Tokenizer::new(toy()).unwrap();
        let s = format!("{tok:?}");
        assert!(
            s.starts_with("Tokenizer { vocab_size: 265, merges: 5,"),
            "{s}"
        );
    }

    #[test]
    fn special_tokens_parse_only_when_asked() {
        let tok = Tokenizer::new(toy()).unwrap();
        assert_eq!(tok.encode("<|eot_id|>", false, true), [EOT]);
        assert_eq!(tok.encode("<unk>", false, true), [UNK]);
        let plain = tok.encode("<|eot_id|>", false, false);
        assert!(plain.len() > 1 && !plain.contains(&EOT));
        assert_eq!(tok.decode(&plain), "<|eot_id|>");
        // User-defined tokens are always matched.
        assert_eq!(tok.encode("hello<mask>", false, false), [HELLO, MASK]);
        assert_eq!(tok.decode(&[HELLO, EOT, MASK]), "hello<|eot_id|><mask>");
        assert!(tok.is_control(EOT) && tok.is_control(UNK) && !tok.is_control(MASK));
        assert_eq!(tok.eog_ids(), [BOS, EOT]);
        assert_eq!(tok.token_id("<|eot_id|>"), Some(EOT));
        assert_eq!(tok.token_id("hello"), Some(HELLO));
    }

    #[test]
    fn decode_marks_bad_ids_and_bytes() {
        let tok = Tokenizer::new(toy()).unwrap();
        assert_eq!(tok.decode(&[HELLO, 9999]), "hello\u{FFFD}");
        assert_eq!(tok.token_bytes(9999), b"");
        // A lone 0xE2 byte token followed by ASCII: one replacement char, then the text.
        let lone = (0..256u32)
            .find(|&id| tok.token_bytes(id) == [0xE2])
            .unwrap();
        assert_eq!(tok.decode(&[lone, HELLO]), "\u{FFFD}hello");
        assert_eq!(tok.token_type(HELLO), Some(token_type::NORMAL));
        assert_eq!(tok.token_type(9999), None);
    }

    #[test]
    fn rejects_bad_data_with_clear_errors() {
        let mut d = toy();
        d.tokens.clear();
        d.token_types.clear();
        assert!(err(d).contains("no tokens"));

        let mut d = toy();
        d.token_types.pop();
        assert!(err(d).contains(
            "tokenizer.ggml.token_type has 264 entries but tokenizer.ggml.tokens has 265"
        ));

        let mut d = toy();
        d.token_types[3] = 9;
        assert!(err(d).contains("token 3 has token type 9"));

        let mut d = toy();
        d.merges.push("nospace".into());
        assert!(err(d).contains("merge #5 \"nospace\" is not two tokens"));

        let mut d = toy();
        d.merges.push("h ".into());
        assert!(err(d).contains("merge #5 \"h \" is not two tokens"));

        let mut d = toy();
        d.merges.push("h xyz".into());
        assert!(err(d).contains("merge #5 \"h xyz\" uses \"xyz\", which is not an ordinary token"));

        let mut d = toy();
        d.merges.push("o w".into());
        assert!(err(d).contains("merge #5 \"o w\" produces a token that is not in the vocabulary"));

        let mut d = toy();
        d.bos_id = Some(265);
        assert!(
            err(d).contains("the BOS token id 265 is out of range: the vocabulary has 265 tokens")
        );

        let mut d = toy();
        d.eos_id = Some(u32::MAX);
        assert!(err(d).contains("EOS token id 4294967295 is out of range"));

        let mut d = toy();
        d.bos_id = None;
        assert!(
            err(d).contains("add_bos_token is true but there is no tokenizer.ggml.bos_token_id")
        );

        let mut d = toy();
        d.pre = Some("qwen2".into());
        assert!(err(d).contains("pre-tokenizer \"qwen2\" (tokenizer.ggml.pre) is not supported"));

        let mut d = toy();
        d.tokens[b'a' as usize] = "not-a-byte".into();
        assert!(err(d).contains("byte 0x61 has no token"));
    }

    #[test]
    fn accepts_llama3_aliases_missing_types_and_non_byte_tokens() {
        for pre in ["llama3", "llama-bpe", "llama-v3"] {
            let mut d = toy();
            d.pre = Some(pre.into());
            assert!(Tokenizer::new(d).is_ok(), "{pre}");
        }
        let mut d = toy();
        d.token_types.clear();
        d.bos_id = None;
        d.add_bos = false;
        let tok = Tokenizer::new(d).unwrap();
        // Without types every token is ordinary, so "<|eot_id|>" is not special.
        assert_eq!(tok.encode("x", true, true), [tok.token_id("x").unwrap()]);
        let mut d = toy();
        d.tokens.push("▁sentencepiece".into());
        d.token_types.push(token_type::NORMAL);
        let tok = Tokenizer::new(d).unwrap();
        assert_eq!(tok.decode(&[265]), "▁sentencepiece");
        assert!(!tok.encode("▁sentencepiece", false, false).contains(&265));
    }
}
