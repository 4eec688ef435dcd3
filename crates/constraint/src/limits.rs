//! What a client's grammar may make the engine do: its size, and llguidance's work and memory
//! limits. Every limit here is an error naming it, never a stall: llguidance counts its work
//! ("fuel", Earley items) and stops with an error when a limit is reached.

use llguidance::api::ParserLimits;

/// The largest grammar text accepted (GBNF, Lark, or a JSON schema serialized): 256 KiB, many
/// times the largest real tool or response schema, small enough that compiling stays within
/// the lexer fuel below.
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;

/// The string formats llguidance's JSON Schema compiler knows (`format`).
pub const JSON_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
    "uri",
];

/// The limits every grammar is compiled and run with. The speeds llguidance documents on
/// `ParserLimits`:
/// lexer fuel ~14k-50k units/ms, Earley items ~20k/ms, a lexer state 1-2 kB.
pub fn parser_limits() -> ParserLimits {
    ParserLimits {
        // Alternatives alive at one position (the grammar's branching factor).
        max_items_in_row: 2_000,
        // Building the initial lexer when a grammar is compiled: ~20 ms at most.
        initial_lexer_fuel: 1_000_000,
        // Lexer work for one token mask: ~15 ms at most.
        step_lexer_fuel: 200_000,
        // Earley items for one token mask: ~2.5 ms at most.
        step_max_items: 50_000,
        // Lexer DFA states over a whole generation (the DFA grows lazily): ~50-100 MB at most,
        // a fifth of llguidance's default.
        max_lexer_states: 50_000,
        // Symbols in the compiled grammar (a 256 KiB grammar stays far below it).
        max_grammar_size: 500_000,
        // Match very large lexemes against the whole vocabulary once at compile time (bounded by
        // the initial fuel) instead of at every step.
        precompute_large_lexemes: true,
        // Errors without llguidance's dump of the parser state and grammar: a client sees the
        // first line.
        verbose_errors: false,
    }
}
