//! Constrained decoding: what a request may generate, as a per-token mask over a model's
//! vocabulary.
//!
//! Owns: the `Grammar` a request asks for (JSON Schema, any JSON object, GBNF, Lark), the
//! `Vocabulary` the engine sees (token bytes, special tokens, end-of-generation ids; built once
//! per loaded model), compiling a grammar for it (`Vocabulary::compile`, with the size and work
//! limits in `limits.rs`), the per-sequence `Constraint` (mask logits, accept the sampled token,
//! fork for `n` > 1) and the GBNF → Lark translation (`gbnf.rs`). The grammar engine is Microsoft's
//! `llguidance` (an Earley parser over a lazily built lexer DFA, walked against a token trie);
//! `docs/structured-outputs.md` says why, which JSON Schema subset and which GBNF dialect are
//! accepted, and how end-of-generation is handled.
//!
//! Does not: sample, tokenize text, or know about HTTP. The engine (server/src/engine/) masks the
//! logits of a constrained sequence before its sampler runs and feeds back the sampled token.

mod bounded;
mod gbnf;
mod limits;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie, TokenId};
use llguidance::{JsonCompileOptions, Matcher, ParserFactory};

pub use bounded::{MAX_FRACTION_DIGITS, bound_for_generation, check_supported};
pub use gbnf::gbnf_to_lark;
#[doc(hidden)]
pub use gbnf::gbnf_to_lark_char_level;
pub use limits::{MAX_GRAMMAR_BYTES, parser_limits};

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// OpenAI `response_format: {"type": "json_object"}`: any JSON object.
    JsonObject,
    /// A JSON Schema (OpenAI `json_schema.schema`, llama.cpp `json_schema`).
    JsonSchema(serde_json::Value),
    /// llama.cpp's GBNF grammar text (`grammar` on `/completion`).
    Gbnf(String),
    /// llguidance's Lark dialect (the server builds tool-call grammars with it).
    Lark(String),
}

/// A grammar that cannot be compiled or a generation that cannot go on. The message names the
/// problem and, where there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GrammarError {
    pub message: String,
}

impl GrammarError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        GrammarError {
            message: message.into(),
        }
    }
}

/// toktrie stores a token id in 24 bits of a trie node and reserves `0xff_ffff`.
const MAX_VOCAB: usize = 0xff_ffff;

/// A model's vocabulary as the grammar engine sees it; built once per loaded model (building it
/// sorts the vocabulary into a trie: tens of milliseconds for 128k tokens).
pub struct Vocabulary {
    factory: ParserFactory,
    n_tokens: usize,
    eog: Vec<TokenId>,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("n_tokens", &self.n_tokens)
            .field("eog", &self.eog)
            .finish()
    }
}

impl Vocabulary {
    /// `tokens[i]`: the bytes of token i; `special[i]`: a control/special token (never matches
    /// grammar text); `eog`: end-of-generation ids (allowed exactly when the grammar may end).
    pub fn new(
        tokens: Vec<Vec<u8>>,
        special: Vec<bool>,
        eog: Vec<u32>,
    ) -> Result<Vocabulary, GrammarError> {
        let n = tokens.len();
        if n == 0 {
            return Err(GrammarError::new("the vocabulary is empty"));
        }
        if n >= MAX_VOCAB {
            return Err(GrammarError::new(format!(
                "the vocabulary has {n} tokens; the grammar engine supports fewer than {MAX_VOCAB}"
            )));
        }
        if special.len() != n {
            return Err(GrammarError::new(format!(
                "the vocabulary has {n} tokens but {} special-token flags",
                special.len()
            )));
        }
        let mut eog = eog;
        eog.sort_unstable();
        eog.dedup();
        if let Some(&bad) = eog.iter().find(|&&id| id as usize >= n) {
            return Err(GrammarError::new(format!(
                "end-of-generation token {bad} is outside the vocabulary of {n} tokens"
            )));
        }
        let total: usize = tokens.iter().map(|t| t.len() + 1).sum();
        if total > u32::MAX as usize {
            return Err(GrammarError::new(format!(
                "the vocabulary's tokens take {total} bytes; the grammar engine supports up to 4 GiB"
            )));
        }
        // Special tokens (and end-of-generation ones, however flagged) get toktrie's 0xFF marker
        // in front of their text: valid UTF-8 never contains 0xFF, so grammar text can never
        // match them, and llguidance treats a token starting with it as special
        // (`TokTrie::SPECIAL_TOKEN_MARKER`). An ordinary token whose bytes start with 0xFF (a
        // byte-level vocabulary's lone 0xFF byte) can never be part of UTF-8 text either; it is
        // emptied so that it is not mistaken for a special token (an empty token is never
        // allowed).
        let words: Vec<Vec<u8>> = tokens
            .into_iter()
            .enumerate()
            .map(|(id, bytes)| {
                if special[id] || eog.binary_search(&(id as u32)).is_ok() {
                    let mut w = Vec::with_capacity(bytes.len() + 1);
                    w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(&bytes);
                    w
                } else if bytes.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                    Vec::new()
                } else {
                    bytes
                }
            })
            .collect();
        let info = TokRxInfo {
            vocab_size: n as u32,
            // No end-of-generation token: llguidance skips INVALID_TOKEN when it allows EOS.
            tok_eos: eog
                .first()
                .copied()
                .unwrap_or(llguidance::toktrie::INVALID_TOKEN),
            tok_bos: None,
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let mut trie = TokTrie::from(&info, &words);
        if eog.len() > 1 {
            trie = trie.with_eos_tokens(&eog);
        }
        // Not a canonical tokenizer: llguidance then never forces a tokenization of its own and
        // lets the model pick any tokens that spell allowed text.
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| {
            GrammarError::new(format!("building the grammar engine's vocabulary: {e}"))
        })?;
        factory.quiet();
        *factory.limits_mut() = parser_limits();
        Ok(Vocabulary {
            factory,
            n_tokens: n,
            eog,
        })
    }

    /// The number of tokens (ids `0..len()`; larger ids are always masked).
    pub fn len(&self) -> usize {
        self.n_tokens
    }

    /// Never true: a vocabulary has at least one token.
    pub fn is_empty(&self) -> bool {
        self.n_tokens == 0
    }

    /// Compile a grammar for this vocabulary: errors are a GrammarError whose message names the
    /// problem (e.g. the unsupported JSON-Schema keyword, the GBNF line/column) and the fix.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, GrammarError> {
        let (top, what) = match grammar {
            Grammar::JsonObject => (
                json_grammar(serde_json::json!({"type": "object"}))?,
                "JSON object",
            ),
            Grammar::JsonSchema(schema) => (json_grammar(schema.clone())?, "JSON schema"),
            Grammar::Gbnf(text) => {
                let lark = gbnf_to_lark(text)?;
                (TopLevelGrammar::from_lark(lark), "GBNF grammar")
            }
            Grammar::Lark(text) => {
                check_size("Lark grammar", text.len())?;
                (TopLevelGrammar::from_lark(text.clone()), "Lark grammar")
            }
        };
        // llguidance returns errors for bad grammars; a panic inside it (a bug) is caught and
        // reported the same way rather than taking the engine down.
        let parser = llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(top)
        }))
        .map_err(|e| compile_error(what, &e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(compile_error(what, &e));
        }
        // A grammar with no string at all (e.g. a `$ref` that only refers to itself) is a
        // compile error, not a failure at the first token. The probe shares the matcher's lexer
        // cache, so the first real mask is not computed from scratch again.
        let mut probe = matcher.clone();
        if let Err(e) = probe.compute_mask() {
            let e = step_error(&e);
            return Err(if e.message.contains("dead end") {
                GrammarError::new(format!(
                    "invalid {what}: it allows no output at all: check for a definition that \
                     only refers to itself or contradictory constraints"
                ))
            } else {
                e
            });
        }
        Ok(Constraint {
            matcher,
            n_tokens: self.n_tokens,
            eog: self.eog.clone(),
            done: false,
        })
    }
}

/// The JSON formatting every schema is compiled with: no free whitespace (a model cannot loop
/// on it), `", "` between items and `": "` after keys, llguidance strict about keywords it does
/// not implement.
fn json_options() -> JsonCompileOptions {
    JsonCompileOptions {
        item_separator: ", ".to_string(),
        key_separator: ": ".to_string(),
        whitespace_flexible: false,
        whitespace_pattern: None,
        coerce_one_of: false,
        lenient: false,
        ..JsonCompileOptions::default()
    }
}

fn check_size(what: &str, len: usize) -> Result<(), GrammarError> {
    if len > MAX_GRAMMAR_BYTES {
        return Err(GrammarError::new(format!(
            "the {what} is {len} bytes; the limit is {MAX_GRAMMAR_BYTES} bytes: send a smaller one"
        )));
    }
    Ok(())
}

fn json_grammar(mut schema: serde_json::Value) -> Result<TopLevelGrammar, GrammarError> {
    let text = serde_json::to_string(&schema)
        .map_err(|e| GrammarError::new(format!("invalid JSON schema: {e}")))?;
    check_size("JSON schema", text.len())?;
    check_supported(&schema)?;
    let Some(obj) = schema.as_object_mut() else {
        return Err(GrammarError::new(format!(
            "invalid JSON schema: a schema must be a JSON object (like {{\"type\": \"object\", \
             \"properties\": {{...}}}}), not {}",
            json_kind(&schema)
        )));
    };
    if obj.contains_key("x-guidance") {
        return Err(GrammarError::new(
            "invalid JSON schema: `x-guidance` is not accepted (the server sets the JSON \
             formatting itself): remove it",
        ));
    }
    bound_for_generation(&mut schema);
    // llguidance's supported way to set the compile options of a schema: its top-level
    // `x-guidance` object, read by `JsonCompileOptions::json_to_llg_with_overrides`.
    json_options().apply_to(&mut schema);
    Ok(TopLevelGrammar::from_json_schema(schema))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An llguidance compile error as ours: the first line (later lines are llguidance's grammar
/// dump), unimplemented JSON-Schema keywords and formats named with the fix.
fn compile_error(what: &str, raw: &str) -> GrammarError {
    let first = raw.lines().next().unwrap_or("").trim();
    if let Some(rest) = first
        .find("Unimplemented keys: ")
        .map(|i| &first[i + "Unimplemented keys: ".len()..])
    {
        let keys: Vec<String> = rest
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .split(',')
            .map(|k| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty())
            .collect();
        let list = keys
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let (noun, it) = if keys.len() == 1 {
            ("keyword", "it")
        } else {
            ("keywords", "them")
        };
        return GrammarError::new(format!(
            "unsupported JSON Schema {noun} {list}: remove {it} from the schema (the supported \
             keywords are listed in docs/structured-outputs.md)"
        ));
    }
    if first.contains("oneOf constraints are not supported") {
        return GrammarError::new(
            "unsupported JSON Schema `oneOf`: its branches are not verifiably disjoint (distinct \
             types or a distinguishing `const`), so exactly-one cannot be enforced: use `anyOf`",
        );
    }
    if let Some(i) = first.find("Unknown format: ") {
        let name = first[i + "Unknown format: ".len()..].trim();
        return GrammarError::new(format!(
            "unsupported JSON Schema string format `{name}`: remove `format` or use one of {}",
            limits::JSON_FORMATS.join(", ")
        ));
    }
    GrammarError::new(format!("invalid {what}: {first}"))
}

/// The per-sequence state of one constrained generation.
pub struct Constraint {
    matcher: Matcher,
    n_tokens: usize,
    eog: Vec<TokenId>,
    /// An end-of-generation token was accepted.
    done: bool,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("finished", &self.is_finished())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl Constraint {
    /// An independent copy (n > 1 choices): what one accepts does not change the other. The
    /// copies share the grammar's compiled lexer cache (llguidance keeps it behind a mutex).
    pub fn fork(&self) -> Constraint {
        Constraint {
            matcher: self.matcher.clone(),
            n_tokens: self.n_tokens,
            eog: self.eog.clone(),
            done: self.done,
        }
    }

    /// Set the logits of every token the grammar forbids now to -inf (ids beyond the vocabulary
    /// too); end-of-generation ids stay allowed only if the grammar may end here. Err when no
    /// token at all is allowed (a dead end: the engine ends the request saying so).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        if self.is_finished() {
            // Complete: only ending is possible.
            let mut any = false;
            for (id, l) in logits.iter_mut().enumerate() {
                if self.eog.binary_search(&(id as u32)).is_ok() {
                    any = true;
                } else {
                    *l = f32::NEG_INFINITY;
                }
            }
            return if any {
                Ok(())
            } else {
                Err(GrammarError::new(
                    "the grammar is complete and the model has no end-of-generation token",
                ))
            };
        }
        let allowed = self.matcher.compute_mask().map_err(|e| step_error(&e))?;
        let words = allowed.as_slice();
        let n = self.n_tokens.min(logits.len());
        let (inside, beyond) = logits.split_at_mut(n);
        beyond.fill(f32::NEG_INFINITY);
        let mut any = false;
        for (chunk, &word) in inside.chunks_mut(32).zip(words) {
            // Bits past the vocabulary (in the last word) are never set by llguidance, and the
            // last chunk is cut at `n`, so the bit index is always a token id.
            let word = if chunk.len() < 32 {
                word & ((1u32 << chunk.len()) - 1)
            } else {
                word
            };
            if word == u32::MAX {
                any = true;
            } else if word == 0 {
                chunk.fill(f32::NEG_INFINITY);
            } else {
                any = true;
                for (bit, l) in chunk.iter_mut().enumerate() {
                    if word & (1 << bit) == 0 {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        if any {
            Ok(())
        } else {
            Err(GrammarError::new(
                "the grammar allows no token of this model here (a dead end): the text so far \
                 cannot be continued with the model's tokens",
            ))
        }
    }

    /// Advance by the sampled token (an eog token ends it).
    pub fn accept(&mut self, token: u32) -> Result<(), GrammarError> {
        if token as usize >= self.n_tokens {
            return Err(GrammarError::new(format!(
                "token {token} is outside the grammar's vocabulary of {} tokens",
                self.n_tokens
            )));
        }
        let is_eog = self.eog.binary_search(&token).is_ok();
        if self.is_finished() {
            return if is_eog {
                self.done = true;
                Ok(())
            } else {
                Err(GrammarError::new(format!(
                    "token {token} after the grammar was complete"
                )))
            };
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| step_error(&e))?;
        if is_eog {
            self.done = true;
        }
        Ok(())
    }

    /// The grammar is complete and can take no more text: the engine stops (finish "stop").
    pub fn is_finished(&self) -> bool {
        self.done || (self.matcher.is_stopped() && !self.matcher.is_error())
    }
}

/// An llguidance error while generating, as ours (its first line; llguidance appends its state).
fn step_error(e: &dyn std::fmt::Display) -> GrammarError {
    let raw = e.to_string();
    let first = raw.lines().next().unwrap_or("").trim();
    if first.contains("NoExtensionBias") {
        GrammarError::new(
            "the grammar allows no token of this model here (a dead end): the text so far \
             cannot be continued with the model's tokens",
        )
    } else if first.contains("too complex") || first.contains("fuel") || first.contains("max_items")
    {
        GrammarError::new(format!(
            "the grammar is too complex to follow at this point ({first}): simplify it"
        ))
    } else {
        GrammarError::new(format!("the grammar cannot continue: {first}"))
    }
}
