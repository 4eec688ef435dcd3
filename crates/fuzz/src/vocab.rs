//! A small, real-ish byte-level BPE vocabulary for the tokenizer, chat and HTTP harnesses: all
//! 256 byte tokens, common English, code and multi-byte pieces ranked the way tiktoken
//! vocabularies are (merges derived by [`RankedVocab::to_gguf`], as for LLaMA-3), the LLaMA-3
//! special tokens, and one user-defined and one unknown token so every token type is exercised.
//! The same pieces also make a Qwen2-split tokenizer ([`qwen2_tokenizer`]) and a
//! SentencePiece-style one with byte fallback, written as Microsoft's Gemma 3 converter writes it
//! ([`spm_tokenizer`]).

use bitnet_tokenizer::vocab::{self, RankedVocab, SpmVocab};
use bitnet_tokenizer::{ChatTemplate, Tokenizer, TokenizerData};
use std::sync::OnceLock;

/// Ordinary multi-byte tokens after the 256 single bytes.
const PIECES: &[&str] = &[
    "he",
    "ll",
    "lo",
    "llo",
    "hello",
    "Hello",
    " w",
    "or",
    "ld",
    " world",
    "in",
    "ing",
    " th",
    " the",
    "er",
    " a",
    "an",
    " an",
    "re",
    "on",
    " on",
    "\n\n",
    "  ",
    "    ",
    "12",
    "123",
    "00",
    "'s",
    "'t",
    " '",
    "()",
    "{}",
    "->",
    "::",
    "fn",
    " fn",
    "é",
    "ñ",
    "ü",
    "中",
    "文",
    "中文",
    "😀",
    "\u{200d}",
    "Ġ",
    "Ã",
    "©",
    " User",
    "User",
    ":",
    ": ",
    "Assistant",
    " Assistant",
];

/// Special tokens: (text, llama.cpp token type).
pub const SPECIALS: &[(&str, i32)] = &[
    ("<|begin_of_text|>", 3),
    ("<|end_of_text|>", 3),
    ("<|start_header_id|>", 3),
    ("<|end_header_id|>", 3),
    ("<|eot_id|>", 3),
    ("<mask>", 4),
    ("<unk>", 2),
];

pub const BOS: &str = "<|begin_of_text|>";
pub const EOS: &str = "<|end_of_text|>";

/// The vocabulary as GGUF tokenizer data (BOS added by default, like LLaMA-3).
pub fn data() -> TokenizerData {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.extend(PIECES.iter().map(|p| p.as_bytes().to_vec()));
    let n_ordinary = tokens.len();
    let vocab = RankedVocab {
        special: vec![false; n_ordinary],
        tokens,
    };
    let mut g = vocab.to_gguf();
    for (text, ty) in SPECIALS {
        g.tokens.push(text.to_string());
        g.token_types.push(*ty);
    }
    TokenizerData {
        tokens: g.tokens,
        token_types: g.token_types,
        merges: g.merges,
        bos_id: Some(n_ordinary as u32),
        eos_id: Some(n_ordinary as u32 + 1),
        add_bos: true,
        ..Default::default()
    }
}

/// The tokenizer, built once per process.
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::new(data()).expect("the harness vocabulary is valid"))
}

/// The same vocabulary with the Qwen2 pre-split (single digits, NFC first).
pub fn qwen2_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let mut d = data();
        d.pre = Some("qwen2".into());
        Tokenizer::new(d).expect("the harness vocabulary is valid with the Qwen2 split")
    })
}

/// A SentencePiece-style vocabulary: Gemma's specials, the 256 `<0xXX>` byte pieces, then the
/// pieces above with `▁` for a space (higher score first), one user-defined token.
pub fn spm_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let mut pieces: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
            .map(String::from)
            .to_vec();
        let mut types = vec![3, 3, 3, 2, 4];
        pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        types.extend([6; 256]);
        // Single characters first (every piece's characters must be pieces for merges to
        // reach it), then the multi-character pieces.
        let mut normal: Vec<String> = Vec::new();
        for p in PIECES {
            let p = p.replace(' ', "\u{2581}");
            for c in p.chars() {
                if !normal.contains(&c.to_string()) {
                    normal.push(c.to_string());
                }
            }
        }
        for p in PIECES {
            let p = p.replace(' ', "\u{2581}");
            if !normal.contains(&p) {
                normal.push(p);
            }
        }
        types.extend(std::iter::repeat_n(1, normal.len()));
        pieces.extend(normal);
        let scores = (0..pieces.len()).map(|i| -(i as f32)).collect();
        let spm = SpmVocab {
            pieces,
            scores,
            types,
        };
        let meta =
            vocab::gemma3_embedding(&spm, spm.pieces.len() + 3).expect("padding up always works");
        Tokenizer::new(meta.to_tokenizer_data()).expect("the SentencePiece harness vocabulary")
    })
}

/// BitNet's chat format with this vocabulary's BOS/EOS, as the server builds it.
pub fn bitnet_chat() -> ChatTemplate {
    ChatTemplate::for_model("bitnet-b1.58", None, BOS, EOS).expect("BitNet needs no template")
}
