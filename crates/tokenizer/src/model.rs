//! The BPE tokenizer: built from GGUF-style tokenizer data, it encodes text to token ids and
//! decodes ids to text. Two vocabulary kinds:
//!
//! * **Byte-level** (`tokenizer.ggml.model = "gpt2"`, tokens spelled with GPT-2's byte map):
//!   special tokens are cut out first (see [`super::special`]), each ordinary stretch is
//!   pre-split (see [`super::pretokenize`]: LLaMA-3's or Qwen2's regex, chosen by
//!   `tokenizer.ggml.pre`), and each piece is looked up whole — `ignore_merges`: a piece that is
//!   itself a token is emitted as is — or else BPE-merged from its bytes (see [`super::bpe`]).
//!   Qwen2 vocabularies first put each ordinary stretch in Unicode NFC, as Qwen's
//!   `tokenizer.json` normaliser (and the reference, PyPI `quicktok-v1`'s `qwen3` encoding)
//!   does; LLaMA-3 has no normaliser.
//! * **SentencePiece-style** (Gemma): tokens spell text directly with `▁` (U+2581) for a space
//!   and `<0xXX>` byte tokens. Microsoft's Gemma 3 converter writes these as
//!   `tokenizer.ggml.model = "gpt2"`, `tokenizer.ggml.pre = "default"` with the merges of the
//!   Hugging Face `tokenizer.json`; a `tokenizer.ggml.model = "llama"` file with
//!   `tokenizer.ggml.scores` and no merges is read the same way, merge priority coming from the
//!   score of the merged token (SentencePiece's BPE rule). There is no pre-split and no dummy
//!   prefix (Gemma 3's normaliser only maps spaces to `▁`): each ordinary stretch starts as one
//!   symbol per character — a character with no token falls back to the `<0xXX>` tokens of its
//!   UTF-8 bytes — and the symbols are BPE-merged by rank. Decoding maps `▁` back to a space
//!   and byte tokens to their byte.
//!
//! Decoding concatenates token bytes. This module does not read GGUF files (the caller fills
//! [`TokenizerData`] from the metadata).

use super::bpe::{Merges, Scratch};
use super::bytes::char_to_byte;
use super::lookup::{BytesIndex, TokenStore};
use super::pretokenize::{PreSplit, pieces};
use super::special::{Segment, SpecialMatcher};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const UNDEFINED: i32 = 0;
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    /// Padding entries (`[PAD123]`); SentencePiece-style vocabularies never match them in text.
    pub const UNUSED: i32 = 5;
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
    /// `tokenizer.ggml.add_eos_token`: append EOS when encoding a whole input for an embedding
    /// (see [`Tokenizer::encode_for_embedding`]); generation prompts never get it.
    pub add_eos: bool,
    /// `tokenizer.ggml.model`: `"gpt2"` (BPE with merges) or `"llama"` (SentencePiece with
    /// scores); absent means `"gpt2"`.
    pub model: Option<String>,
    /// `tokenizer.ggml.pre`; absent means the LLaMA-3 split (BitNet 2B-4T's file lacks the key).
    pub pre: Option<String>,
    /// `tokenizer.ggml.scores`, one per token (SentencePiece `"llama"` vocabularies without
    /// merges rank merges by them); may be empty otherwise.
    pub scores: Vec<f32>,
    /// `tokenizer.chat_template`, carried along for [`super::chat::ChatTemplate`].
    pub chat_template: Option<String>,
}

/// Pre-tokenizer names (`tokenizer.ggml.pre`) that mean the LLaMA-3 split.
pub const LLAMA3_PRE_NAMES: &[&str] = &["llama3", "llama-bpe", "llama-v3"];
/// Pre-tokenizer names that mean the Qwen2 split (Qwen2, Qwen2.5, Qwen3).
pub const QWEN2_PRE_NAMES: &[&str] = &["qwen2"];
/// The pre-tokenizer name Microsoft's Gemma 3 converter writes: no pre-split, for a
/// SentencePiece-style vocabulary.
pub const SPM_PRE_NAME: &str = "default";

/// How ordinary text becomes symbols before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// GPT-2 byte-mapped vocabulary, pre-split by a regex, optionally NFC-normalised first.
    ByteLevel { split: PreSplit, nfc: bool },
    /// `▁`-for-space vocabulary with `<0xXX>` byte fallback, no pre-split.
    SentencePiece,
}

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
        "pre-tokenizer {name:?} (tokenizer.ggml.pre) is not supported; supported: {}, {} \
         (or no tokenizer.ggml.pre key, which means llama3), and {SPM_PRE_NAME:?} for a \
         SentencePiece-style vocabulary with <0xXX> byte tokens (Gemma)",
        LLAMA3_PRE_NAMES.join(", "),
        QWEN2_PRE_NAMES.join(", ")
    )]
    UnknownPreTokenizer { name: String },
    #[error(
        "tokenizer model {name:?} (tokenizer.ggml.model) is not supported; supported: \"gpt2\" \
         (BPE with merges) and \"llama\" (SentencePiece BPE with scores)"
    )]
    UnknownModel { name: String },
    #[error(
        "the SentencePiece-style vocabulary has no byte token <0x{byte:02X}>, so text it cannot \
         spell cannot be encoded (the file's vocabulary is incomplete; re-convert the model)"
    )]
    MissingByteFallback { byte: u8 },
    #[error(
        "tokenizer.ggml.scores has {scores} entries but tokenizer.ggml.tokens has {tokens}; \
         a \"llama\" vocabulary without merges needs one score per token (re-convert the model)"
    )]
    ScoreCountMismatch { tokens: usize, scores: usize },
    #[error(
        "tokenizer.ggml.add_eos_token is true but there is no tokenizer.ggml.eos_token_id; \
         set the EOS id or turn add_eos_token off"
    )]
    MissingEos,
    #[error(
        "byte 0x{byte:02X} has no token ({:?}), so this is not a complete byte-level BPE \
         vocabulary (tokenizer.ggml.model must be \"gpt2\" for this tokenizer)",
        super::bytes::byte_to_char(*byte).to_string()
    )]
    MissingByteToken { byte: u8 },
}

/// A BPE tokenizer (byte-level LLaMA-3 / Qwen2, or SentencePiece-style Gemma). Share it
/// (`Arc`): `Send + Sync`, no interior state; cloning copies the vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    kind: Kind,
    store: TokenStore,
    types: Vec<i32>,
    /// Ordinary tokens by bytes.
    index: BytesIndex,
    /// The token of each single byte: GPT-2 byte tokens, or `<0xXX>` for SentencePiece.
    byte_tokens: [u32; 256],
    /// SentencePiece-style only: the token of each ASCII char (`NO_TOKEN` if none), so the
    /// common chars skip the hash lookup.
    ascii_tokens: [u32; 128],
    merges: Merges,
    /// User-defined tokens: always matched in text.
    user_defined: SpecialMatcher,
    /// Control, unknown and user-defined tokens: matched when parsing specials.
    all_special: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: Vec<u32>,
    chat_template: Option<String>,
}

const NO_TOKEN: u32 = u32::MAX;

impl std::fmt::Debug for Tokenizer {
    // The derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.merges.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
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
        let kind = match (data.model.as_deref().unwrap_or("gpt2"), data.pre.as_deref()) {
            ("gpt2", None) => Kind::ByteLevel {
                split: PreSplit::Llama3,
                nfc: false,
            },
            ("gpt2", Some(name)) if LLAMA3_PRE_NAMES.contains(&name) => Kind::ByteLevel {
                split: PreSplit::Llama3,
                nfc: false,
            },
            ("gpt2", Some(name)) if QWEN2_PRE_NAMES.contains(&name) => Kind::ByteLevel {
                split: PreSplit::Qwen2,
                nfc: true,
            },
            // "default" names GPT-2's own split for a byte-level vocabulary, which is not
            // implemented; Gemma's files use it for a SentencePiece-style vocabulary.
            ("gpt2", Some(SPM_PRE_NAME)) if has_byte_fallback(&data.tokens) => Kind::SentencePiece,
            ("gpt2", Some(name)) => {
                return Err(TokenizerError::UnknownPreTokenizer {
                    name: name.to_string(),
                });
            }
            ("llama", _) => Kind::SentencePiece,
            (name, _) => {
                return Err(TokenizerError::UnknownModel {
                    name: name.to_string(),
                });
            }
        };
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
        if data.add_eos && data.eos_id.is_none() {
            return Err(TokenizerError::MissingEos);
        }
        if kind == Kind::SentencePiece
            && data.merges.is_empty()
            && !data.scores.is_empty()
            && data.scores.len() != n
        {
            return Err(TokenizerError::ScoreCountMismatch {
                tokens: n,
                scores: data.scores.len(),
            });
        }

        // Token bytes. Ordinary tokens are byte-mapped; a token with a char outside the map
        // (not a byte-level token at all) is kept as its UTF-8 text and can only be decoded.
        let mut store = TokenStore::default();
        let mut index = BytesIndex::with_capacity(n);
        let mut buf = Vec::new();
        let mut specials = Vec::new();
        let mut byte_tokens = [NO_TOKEN; 256];
        for (id, text) in data.tokens.iter().enumerate() {
            let id = id as u32;
            if is_special_type(types[id as usize]) {
                store.push(text.as_bytes());
                specials.push(id);
                continue;
            }
            buf.clear();
            match kind {
                Kind::ByteLevel { .. } => {
                    if map_token_text(text, &mut buf) {
                        store.push(&buf);
                        if !buf.is_empty() {
                            index.insert(&store, id);
                        }
                    } else {
                        store.push(text.as_bytes());
                    }
                }
                Kind::SentencePiece => {
                    if let Some(b) = byte_token_value(text) {
                        // Byte tokens are only a fallback: never looked up as text.
                        store.push(&[b]);
                        if byte_tokens[b as usize] == NO_TOKEN {
                            byte_tokens[b as usize] = id;
                        }
                    } else {
                        spm_token_bytes(text, &mut buf);
                        store.push(&buf);
                        if !buf.is_empty() && types[id as usize] != token_type::UNUSED {
                            index.insert(&store, id);
                        }
                    }
                }
            }
        }
        let mut ascii_tokens = [NO_TOKEN; 128];
        match kind {
            Kind::ByteLevel { .. } => {
                for b in 0..=255u8 {
                    byte_tokens[b as usize] = index
                        .get(&store, &[b])
                        .ok_or(TokenizerError::MissingByteToken { byte: b })?;
                }
            }
            Kind::SentencePiece => {
                if let Some(b) = (0..=255u8).find(|&b| byte_tokens[b as usize] == NO_TOKEN) {
                    return Err(TokenizerError::MissingByteFallback { byte: b });
                }
                for c in 0..128u8 {
                    ascii_tokens[c as usize] = index.get(&store, &[c]).unwrap_or(NO_TOKEN);
                }
            }
        }

        let merges = match kind {
            Kind::ByteLevel { .. } => parse_merges(&data.merges, &store, &index, map_token_text)?,
            Kind::SentencePiece if data.merges.is_empty() => {
                merges_from_scores(&data.scores, &types, &store, &index)
            }
            Kind::SentencePiece => parse_merges(&data.merges, &store, &index, |t, out| {
                spm_token_bytes(t, out);
                true
            })?,
        };

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
            kind,
            store,
            types,
            index,
            byte_tokens,
            ascii_tokens,
            merges,
            user_defined,
            all_special,
            bos: data.bos_id,
            eos: data.eos_id,
            add_bos: data.add_bos,
            add_eos: data.add_eos,
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

    /// Whether an embedding input gets EOS appended (`tokenizer.ggml.add_eos_token`; Qwen3
    /// embedding files set it so the last token, which last-token pooling reads, is
    /// `<|endoftext|>`).
    pub fn add_eos_by_default(&self) -> bool {
        self.add_eos
    }

    /// Whether the vocabulary is SentencePiece-style (`▁` for space, `<0xXX>` byte tokens).
    pub fn is_sentencepiece(&self) -> bool {
        self.kind == Kind::SentencePiece
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

    /// Encodes one whole input for an embedding model, as the file's metadata asks: BOS first
    /// if `tokenizer.ggml.add_bos_token`, EOS last if `tokenizer.ggml.add_eos_token` (Qwen3
    /// embedding files append `<|endoftext|>` this way; Gemma 3 adds BOS only). Special-token
    /// text is parsed when `parse_special`. Generation prompts use [`Tokenizer::encode`], which
    /// never appends EOS.
    pub fn encode_for_embedding(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut ids = self.encode(text, self.add_bos, parse_special);
        if self.add_eos {
            ids.extend(self.eos);
        }
        ids
    }

    fn encode_ordinary_into(&self, text: &str, scratch: &mut EncodeScratch, out: &mut Vec<u32>) {
        match self.kind {
            Kind::ByteLevel { split, nfc } => {
                if nfc
                    && unicode_normalization::is_nfc_quick(text.chars())
                        != unicode_normalization::IsNormalized::Yes
                {
                    use unicode_normalization::UnicodeNormalization;
                    let normalized: String = text.nfc().collect();
                    self.encode_byte_level(split, &normalized, scratch, out);
                } else {
                    self.encode_byte_level(split, text, scratch, out);
                }
            }
            Kind::SentencePiece => self.encode_sentencepiece(text, scratch, out),
        }
    }

    fn encode_sentencepiece(&self, text: &str, scratch: &mut EncodeScratch, out: &mut Vec<u32>) {
        let symbols = &mut scratch.symbols;
        symbols.clear();
        let mut utf8 = [0u8; 4];
        for c in text.chars() {
            // The store spells `▁` as a space, so a `▁` in the text means the same as a space
            // (as in the reference, whose normaliser maps spaces to `▁`).
            let c = if c == '\u{2581}' { ' ' } else { c };
            let id = if (c as u32) < 128 {
                self.ascii_tokens[c as usize]
            } else {
                let bytes = c.encode_utf8(&mut utf8).as_bytes();
                self.index.get(&self.store, bytes).unwrap_or(NO_TOKEN)
            };
            if id != NO_TOKEN {
                symbols.push(id);
            } else {
                let bytes = c.encode_utf8(&mut utf8).as_bytes();
                symbols.extend(bytes.iter().map(|&b| self.byte_tokens[b as usize]));
            }
        }
        self.merges.apply(symbols, &mut scratch.bpe, out);
    }

    fn encode_byte_level(
        &self,
        split: PreSplit,
        text: &str,
        scratch: &mut EncodeScratch,
        out: &mut Vec<u32>,
    ) {
        for piece in pieces(split, text) {
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

/// Whether the vocabulary has all 256 SentencePiece byte tokens `<0x00>`..`<0xFF>`.
fn has_byte_fallback(tokens: &[String]) -> bool {
    let mut seen = [false; 256];
    for t in tokens {
        if let Some(b) = byte_token_value(t) {
            seen[b as usize] = true;
        }
    }
    seen.iter().all(|&s| s)
}

/// `<0xAB>` → `Some(0xAB)`: a SentencePiece byte token (upper-case hex, as SentencePiece
/// writes them).
fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// SentencePiece token text → the bytes it stands for (`▁` → space).
fn spm_token_bytes(text: &str, out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(at) = rest.find('\u{2581}') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        out.push(b' ');
        rest = &rest[at + '\u{2581}'.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// SentencePiece's BPE rule for a `"llama"` vocabulary without merges: any two adjacent
/// symbols whose concatenation is an ordinary token may merge, the token with the highest
/// score first (the lower id on equal scores), the leftmost place first when several pairs
/// make equally good tokens. As merges: every split of a token into two ordinary tokens, all
/// with the rank of the merged token's place in score order.
fn merges_from_scores(
    scores: &[f32],
    types: &[i32],
    store: &TokenStore,
    index: &BytesIndex,
) -> Merges {
    let n = types.len();
    let score = |id: usize| scores.get(id).copied().unwrap_or(0.0);
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&id| {
            matches!(
                types[id as usize],
                token_type::NORMAL | token_type::UNDEFINED
            )
        })
        .collect();
    order.sort_by(|&a, &b| {
        score(b as usize)
            .total_cmp(&score(a as usize))
            .then(a.cmp(&b))
    });
    let mut table = Merges::with_capacity(order.len());
    for (rank, &id) in order.iter().enumerate() {
        let bytes = store.get(id);
        // The merged token must be what the index finds for its text (not a byte token).
        if index.get(store, bytes) != Some(id) {
            continue;
        }
        for cut in 1..bytes.len() {
            if let (Some(l), Some(r)) = (
                index.get(store, &bytes[..cut]),
                index.get(store, &bytes[cut..]),
            ) {
                table.insert(l, r, rank as u32, id);
            }
        }
    }
    table
}

fn parse_merges(
    merges: &[String],
    store: &TokenStore,
    index: &BytesIndex,
    token_bytes: impl Fn(&str, &mut Vec<u8>) -> bool,
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
            if token_bytes(text, buf) {
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
            chat_template: Some("{{ x }}".into()),
            ..Default::default()
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
        d.pre = Some("deepseek-llm".into());
        assert!(
            err(d).contains("pre-tokenizer \"deepseek-llm\" (tokenizer.ggml.pre) is not supported")
        );

        // "default" is accepted only for a SentencePiece-style vocabulary.
        let mut d = toy();
        d.pre = Some("default".into());
        assert!(err(d).contains("pre-tokenizer \"default\" (tokenizer.ggml.pre) is not supported"));

        let mut d = toy();
        d.model = Some("bert".into());
        assert!(
            err(d).contains("tokenizer model \"bert\" (tokenizer.ggml.model) is not supported")
        );

        let mut d = toy();
        d.add_eos = true;
        d.eos_id = None;
        assert!(err(d).contains("add_eos_token is true but there is no"));

        let mut d = toy();
        d.tokens[b'a' as usize] = "not-a-byte".into();
        assert!(err(d).contains("byte 0x61 has no token"));
    }

    /// A SentencePiece-style toy: specials, 256 byte tokens, then "▁", "h", "e", "he", "▁he",
    /// "l", "lo", "hel"… in score order.
    fn spm_toy() -> TokenizerData {
        let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
            .map(String::from)
            .to_vec();
        let mut token_types = vec![
            token_type::CONTROL,
            token_type::CONTROL,
            token_type::CONTROL,
            token_type::UNKNOWN,
            token_type::CONTROL,
        ];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            token_types.push(token_type::NORMAL); // as Microsoft's converter types them
        }
        for t in [
            "\u{2581}",
            "h",
            "e",
            "l",
            "o",
            "he",
            "ll",
            "\u{2581}he",
            "llo",
            "hello",
        ] {
            tokens.push(t.to_string());
            token_types.push(token_type::NORMAL);
        }
        tokens.push("[PAD271]".into());
        token_types.push(token_type::UNUSED);
        let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
        TokenizerData {
            tokens,
            token_types,
            merges: ["h e", "l l", "\u{2581} he", "ll o", "he llo"]
                .map(String::from)
                .to_vec(),
            bos_id: Some(2),
            eos_id: Some(1),
            add_bos: true,
            model: Some("gpt2".into()),
            pre: Some("default".into()),
            scores,
            ..Default::default()
        }
    }

    #[test]
    fn sentencepiece_style_encodes_with_byte_fallback() {
        for merges in [true, false] {
            let mut d = spm_toy();
            if !merges {
                d.merges.clear();
                d.model = Some("llama".into());
            }
            let tok = Tokenizer::new(d).unwrap();
            assert!(tok.is_sentencepiece());
            let id = |t: &str| tok.token_id(t).unwrap();
            assert_eq!(tok.encode("hello", false, false), [id("hello")]);
            // A space is "▁"; no dummy prefix; "▁" in the text means a space too.
            assert_eq!(tok.encode(" he", false, false), [id(" he")]);
            assert_eq!(tok.encode("\u{2581}he", false, false), [id(" he")]);
            // "x" and "é" are not tokens: their UTF-8 bytes (<0x78>, <0xC3> <0xA9>).
            assert_eq!(
                tok.encode("xé", false, false),
                [5 + 0x78, 5 + 0xC3, 5 + 0xA9]
            );
            assert_eq!(
                tok.decode(&tok.encode("xé hello", false, false)),
                "xé hello"
            );
            assert_eq!(tok.encode_for_embedding("he", false), [2, id("he")]);
            assert_eq!(tok.encode("<start_of_turn>", false, true), [4]);
            // The padding entry is never produced from text.
            assert!(!tok.encode("[PAD271]", false, true).contains(&271));
        }
    }

    #[test]
    fn sentencepiece_style_rejects_incomplete_data() {
        let mut d = spm_toy();
        d.tokens[5 + 0x41] = "<0x4G>".into();
        // Without every byte token, "default" is not a SentencePiece-style vocabulary.
        assert!(err(d).contains("pre-tokenizer \"default\""));
        let mut d = spm_toy();
        d.tokens[5 + 0x41] = "<0x4G>".into();
        d.model = Some("llama".into());
        assert!(err(d).contains("has no byte token <0x41>"));
        let mut d = spm_toy();
        d.model = Some("llama".into());
        d.merges.clear();
        d.scores.pop();
        assert!(
            err(d).contains(
                "tokenizer.ggml.scores has 271 entries but tokenizer.ggml.tokens has 272"
            )
        );
        assert_eq!(
            byte_token_value("<0xab>"),
            None,
            "SentencePiece writes upper-case hex"
        );
        assert_eq!(byte_token_value("<0xAB>"), Some(0xAB));
        assert_eq!(byte_token_value("<0xABC>"), None);
    }

    proptest::proptest! {
        /// Any text round-trips (`▁` comes back as a space), every id is in range, and the
        /// merges form and the scores form agree (each toy token has one split, so merge
        /// rank and SentencePiece's score rule coincide). Long inputs take the heap path.
        #[test]
        fn sentencepiece_style_round_trips(
            text in proptest::string::string_regex("[hel o\u{2581}éx😀\n]{0,120}").unwrap(),
            other in proptest::prelude::any::<String>(),
        ) {
            let by_merges = Tokenizer::new(spm_toy()).unwrap();
            let mut d = spm_toy();
            d.merges.clear();
            d.model = Some("llama".into());
            let by_scores = Tokenizer::new(d).unwrap();
            for s in [&text, &other] {
                let ids = by_merges.encode(s, false, false);
                proptest::prop_assert!(ids.iter().all(|&id| (id as usize) < by_merges.vocab_size()));
                proptest::prop_assert_eq!(by_merges.decode(&ids), s.replace('\u{2581}', " "));
                proptest::prop_assert_eq!(&ids, &by_scores.encode(s, false, false));
            }
        }
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
