//! The grammar engine (`bitnet-constraint`) behind the engine's [`OutputConstraint`] seam: the
//! loaded model's vocabulary as it sees it — every token's bytes, which tokens are control
//! tokens (never grammar text), and the end-of-generation ids (allowed exactly when the grammar
//! may end) — built once per loaded model (`Engine::grammar_vocabulary`), and its per-sequence
//! [`Constraint`] as the scheduler drives it.
//!
//! This module does NOT parse request fields (`http/structured.rs`, `http/tools.rs`) or decide
//! where a mask applies (the scheduler masks before every draw).

use super::{OutputConstraint, TokenCodec};
use bitnet_constraint::{Constraint, GrammarError, Vocabulary};

/// Build the grammar engine's vocabulary from the model's tokenizer (ids `0..vocab_size()`).
pub fn vocabulary(tok: &dyn TokenCodec) -> Result<Vocabulary, GrammarError> {
    let n = tok.vocab_size();
    let mut tokens = Vec::with_capacity(n);
    let mut special = Vec::with_capacity(n);
    let mut eog = Vec::new();
    for id in 0..n as u32 {
        tokens.push(tok.token_bytes(id).unwrap_or_default());
        special.push(tok.is_control(id));
        if tok.is_eog(id) {
            eog.push(id);
        }
    }
    Vocabulary::new(tokens, special, eog)
}

impl OutputConstraint for Constraint {
    fn fork(&self) -> Box<dyn OutputConstraint> {
        Box::new(Constraint::fork(self))
    }

    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        Constraint::mask(self, logits).map_err(|e| e.message)
    }

    fn accept(&mut self, token: u32) -> Result<(), String> {
        Constraint::accept(self, token).map_err(|e| e.message)
    }

    fn is_finished(&self) -> bool {
        Constraint::is_finished(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TokenizeError;
    use bitnet_constraint::Grammar;
    use bitnet_tokenizer::ChatMessage;

    /// Bytes 0..256 as tokens, then `<eot>` (control, end of generation) and `<ctl>` (control).
    struct Bytes;
    const EOT: u32 = 256;
    const CTL: u32 = 257;

    impl TokenCodec for Bytes {
        fn vocab_size(&self) -> usize {
            258
        }
        fn encode(&self, text: &str, _: bool, _: bool) -> Result<Vec<u32>, TokenizeError> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
            match id {
                0..=255 => Some(vec![id as u8]),
                EOT => Some(b"<eot>".to_vec()),
                CTL => Some(b"<ctl>".to_vec()),
                _ => None,
            }
        }
        fn is_eog(&self, id: u32) -> bool {
            id == EOT
        }
        fn is_control(&self, id: u32) -> bool {
            id >= EOT
        }
        fn apply_chat_template(&self, _: &[ChatMessage], _: bool) -> Result<String, TokenizeError> {
            Err(TokenizeError("no template".into()))
        }
    }

    #[test]
    fn control_tokens_are_never_text_and_eog_ends() {
        let v = vocabulary(&Bytes).unwrap();
        assert_eq!(v.len(), 258);
        let mut c = v
            .compile(&Grammar::Gbnf("root ::= \"<ctl>\" | \"x\"".into()))
            .unwrap();
        // A model head padded past the tokenizer's vocabulary.
        let mut logits = vec![0.0f32; 300];
        c.mask(&mut logits).unwrap();
        assert!(logits[b'<' as usize].is_finite() && logits[b'x' as usize].is_finite());
        assert!(logits[CTL as usize].is_infinite() && logits[EOT as usize].is_infinite());
        assert!(logits[258..].iter().all(|l| l.is_infinite()));
        c.accept(b'x' as u32).unwrap();
        assert!(c.is_finished());
    }
}
