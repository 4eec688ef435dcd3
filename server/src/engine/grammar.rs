//! The grammar engine behind the engine's [`OutputConstraint`] seam: the model's vocabulary as
//! `bitnet_constraint` sees it, and its per-sequence [`Constraint`] as the scheduler drives it.
//!
//! This module does NOT parse request fields (`http/structured.rs`, `http/tools.rs`) or decide
//! where a mask applies (the scheduler masks before every draw).

use super::{OutputConstraint, TokenCodec};
use bitnet_constraint::{Constraint, GrammarError, Vocabulary};

/// The vocabulary of `tok` for the grammar engine: every token's bytes, which ones are control
/// tokens (never grammar text) and which end a generation (allowed where the grammar may end).
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
