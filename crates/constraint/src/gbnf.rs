//! llama.cpp's GBNF → llguidance's Lark.
//!
//! GBNF (the dialect of llama.cpp's grammar README): rules `name ::= body` (names
//! `[a-zA-Z0-9-]+`; generation starts at `root`), alternatives `|`, sequences, groups `( )`,
//! postfix `*` `+` `?` `{m}` `{m,}` `{m,n}`, literals `"..."`, character classes `[...]` and
//! `[^...]` with ranges, `.` (any character), escapes `\n \t \r \\ \" \[ \] \- \xHH \uHHHH
//! \UHHHHHHHH`, `#` comments; a rule ends at the end of its line unless inside parentheses (a
//! line starting with `|` also continues it). GBNF is a grammar over characters with no lexer,
//! so the translation keeps it one: every literal is spelled as one-character Lark strings and
//! every class is a one-character regex. llguidance's lexer then never has to choose between a
//! shorter and a longer match (its lexemes are matched longest-first), and the Lark grammar
//! accepts exactly the GBNF grammar's language. Rules stay rules, so recursion (left recursion
//! too) works.
//!
//! Not supported (an error naming it): llama.cpp's token references `<[id]>`, `<name>`, `!<...>`.

mod lexemes;

use crate::{GrammarError, MAX_GRAMMAR_BYTES};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The deepest nesting of parentheses accepted.
const MAX_NESTING: usize = 64;
/// The largest `{m,n}` bound accepted.
const MAX_REPEAT: u32 = 100_000;
/// The most postfix operators on one element (`x*?` is two).
const MAX_POSTFIX: usize = 8;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Empty,
    Literal(Vec<char>),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Any,
    /// A rule by name, with where it is used (resolved when translating).
    Ref {
        name: String,
        at: usize,
    },
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

struct Rule {
    name: String,
    at: usize,
    body: Node,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    rules: Vec<Rule>,
}

/// Translate a GBNF grammar to llguidance Lark. Errors give the line and column and say what
/// was expected there.
pub fn gbnf_to_lark(text: &str) -> Result<String, GrammarError> {
    if text.len() > MAX_GRAMMAR_BYTES {
        return Err(GrammarError::new(format!(
            "the GBNF grammar is {} bytes; the limit is {MAX_GRAMMAR_BYTES} bytes: send a smaller one",
            text.len()
        )));
    }
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        rules: Vec::new(),
    };
    p.parse_grammar()?;
    p.to_lark(true)
}

/// The translation with every repetition character-level (no lexeme lifting): the reference
/// the lifted translation is tested against.
#[doc(hidden)]
pub fn gbnf_to_lark_char_level(text: &str) -> Result<String, GrammarError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
        rules: Vec::new(),
    };
    p.parse_grammar()?;
    p.to_lark(false)
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    /// `line:column` (1-based, columns in characters) of char index `at`.
    fn location(&self, at: usize) -> String {
        let mut line = 1;
        let mut col = 1;
        for &c in &self.chars[..at.min(self.chars.len())] {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        format!("{line}:{col}")
    }

    fn error(&self, at: usize, msg: impl std::fmt::Display) -> GrammarError {
        GrammarError::new(format!(
            "invalid GBNF grammar at {}: {msg}",
            self.location(at)
        ))
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the grammar".to_string(),
            Some('\n') | Some('\r') => "the end of the line".to_string(),
            Some(c) => format!("`{}`", c.escape_debug()),
        }
    }

    /// Spaces, tabs and comments; newlines too when `newlines`.
    fn skip_space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' || c == '\r' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_word_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-'
    }

    fn parse_name(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(Self::is_word_char) {
            self.pos += 1;
        }
        (self.pos > start).then(|| self.chars[start..self.pos].iter().collect())
    }

    fn parse_grammar(&mut self) -> Result<(), GrammarError> {
        self.skip_space(true);
        while self.peek().is_some() {
            self.parse_rule()?;
            self.skip_space(true);
        }
        Ok(())
    }

    fn parse_rule(&mut self) -> Result<(), GrammarError> {
        let at = self.pos;
        let Some(name) = self.parse_name() else {
            return Err(self.error(
                at,
                format!(
                    "expected a rule name (letters, digits, `-`) starting a rule `name ::= ...`, found {}",
                    self.found()
                ),
            ));
        };
        self.skip_space(false);
        if !self.starts_with("::=") {
            return Err(self.error(
                self.pos,
                format!(
                    "expected `::=` after the rule name `{name}`, found {}",
                    self.found()
                ),
            ));
        }
        self.pos += 3;
        self.skip_space(true);
        let body = self.parse_alternatives(false, 0)?;
        self.skip_space(false);
        match self.peek() {
            None | Some('\n') | Some('\r') => {}
            Some(')') => {
                return Err(self.error(self.pos, "unmatched `)`: no group is open here"));
            }
            Some(_) => {
                return Err(self.error(
                    self.pos,
                    format!("expected the end of rule `{name}`, found {}", self.found()),
                ));
            }
        }
        if let Some(prev) = self.rules.iter().find(|r| r.name == name) {
            return Err(self.error(
                at,
                format!(
                    "rule `{name}` is defined twice (first at {}): give one of them another name",
                    self.location(prev.at)
                ),
            ));
        }
        self.rules.push(Rule { name, at, body });
        Ok(())
    }

    fn parse_alternatives(&mut self, nested: bool, depth: usize) -> Result<Node, GrammarError> {
        let mut alts = vec![self.parse_sequence(nested, depth)?];
        loop {
            self.skip_space(nested);
            if !nested {
                // A line starting with `|` continues the rule (an extension of llama.cpp's
                // syntax, which needs the `|` at the end of the previous line).
                let save = self.pos;
                self.skip_space(true);
                if self.peek() != Some('|') {
                    self.pos = save;
                }
            }
            if self.peek() != Some('|') {
                break;
            }
            self.pos += 1;
            self.skip_space(true);
            alts.push(self.parse_sequence(nested, depth)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(alts)
        })
    }

    fn parse_sequence(&mut self, nested: bool, depth: usize) -> Result<Node, GrammarError> {
        let mut items: Vec<Node> = Vec::new();
        // Postfix operators applied to the last item so far.
        let mut postfix = 0;
        loop {
            self.skip_space(nested);
            let at = self.pos;
            let Some(c) = self.peek() else { break };
            let item = match c {
                '|' | ')' | '\n' | '\r' => break,
                '"' => {
                    postfix = 0;
                    self.parse_literal()?
                }
                '[' => {
                    postfix = 0;
                    self.parse_class()?
                }
                '.' => {
                    postfix = 0;
                    self.pos += 1;
                    Node::Any
                }
                '(' => {
                    postfix = 0;
                    if depth >= MAX_NESTING {
                        return Err(self.error(
                            at,
                            format!("groups nested more than {MAX_NESTING} deep: flatten the grammar with named rules"),
                        ));
                    }
                    self.pos += 1;
                    self.skip_space(true);
                    let inner = self.parse_alternatives(true, depth + 1)?;
                    self.skip_space(true);
                    if self.peek() != Some(')') {
                        return Err(self.error(
                            self.pos,
                            format!(
                                "expected `)` closing the group opened at {}, found {}",
                                self.location(at),
                                self.found()
                            ),
                        ));
                    }
                    self.pos += 1;
                    inner
                }
                '*' | '+' | '?' | '{' => {
                    let Some(last) = items.pop() else {
                        return Err(self.error(
                            at,
                            format!("`{c}` must follow an element (a literal, class, rule name or group)"),
                        ));
                    };
                    postfix += 1;
                    if postfix > MAX_POSTFIX {
                        return Err(self.error(
                            at,
                            format!("more than {MAX_POSTFIX} repetition operators on one element"),
                        ));
                    }
                    let (min, max) = self.parse_repetition()?;
                    items.push(Node::Repeat {
                        node: Box::new(last),
                        min,
                        max,
                    });
                    continue;
                }
                '<' | '!' if c == '<' || self.peek_at(1) == Some('<') => {
                    return Err(self.error(
                        at,
                        "token references (`<[id]>`, `<name>`, `!<...>`) are not supported: \
                         write the text as a literal instead",
                    ));
                }
                c if Self::is_word_char(c) => {
                    postfix = 0;
                    let name = self.parse_name().unwrap_or_default();
                    let save = self.pos;
                    self.skip_space(false);
                    if self.starts_with("::=") {
                        return Err(
                            self.error(at, format!("rule `{name}` must start on a new line"))
                        );
                    }
                    self.pos = save;
                    Node::Ref { name, at }
                }
                _ => {
                    return Err(self.error(
                        at,
                        format!(
                            "expected a literal \"...\", a character class [...], `.`, a rule name or `(`, found {}",
                            self.found()
                        ),
                    ));
                }
            };
            items.push(item);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Seq(items),
        })
    }

    /// After an element: `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}`.
    fn parse_repetition(&mut self) -> Result<(u32, Option<u32>), GrammarError> {
        let at = self.pos;
        let c = self.peek();
        self.pos += 1;
        match c {
            Some('*') => return Ok((0, None)),
            Some('+') => return Ok((1, None)),
            Some('?') => return Ok((0, Some(1))),
            _ => {}
        }
        self.skip_space(true);
        let min = self.parse_count(at)?;
        self.skip_space(true);
        let max = match self.peek() {
            Some('}') => Some(min),
            Some(',') => {
                self.pos += 1;
                self.skip_space(true);
                if self.peek() == Some('}') {
                    None
                } else {
                    let max = self.parse_count(at)?;
                    self.skip_space(true);
                    Some(max)
                }
            }
            _ => {
                return Err(self.error(
                    self.pos,
                    format!(
                        "expected `,` or `}}` in the repetition `{{m,n}}`, found {}",
                        self.found()
                    ),
                ));
            }
        };
        if self.peek() != Some('}') {
            return Err(self.error(
                self.pos,
                format!(
                    "expected `}}` closing the repetition opened at {}, found {}",
                    self.location(at),
                    self.found()
                ),
            ));
        }
        self.pos += 1;
        if let Some(max) = max
            && max < min
        {
            return Err(self.error(
                at,
                format!("the repetition `{{{min},{max}}}` has its maximum below its minimum"),
            ));
        }
        Ok((min, max))
    }

    fn parse_count(&mut self, open: usize) -> Result<u32, GrammarError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error(
                self.pos,
                format!(
                    "expected a number in the repetition opened at {}, found {}",
                    self.location(open),
                    self.found()
                ),
            ));
        }
        let digits: String = self.chars[start..self.pos].iter().collect();
        match digits.parse::<u32>() {
            Ok(n) if n <= MAX_REPEAT => Ok(n),
            _ => Err(self.error(
                start,
                format!("the repetition count {digits} is above the limit of {MAX_REPEAT}"),
            )),
        }
    }

    /// One character of a literal or class: an escape or the character itself.
    fn parse_char(&mut self, what: &str, open: usize) -> Result<char, GrammarError> {
        let at = self.pos;
        let Some(c) = self.peek() else {
            return Err(self.error(open, format!("unterminated {what}: it is never closed")));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(e) = self.peek() else {
            return Err(self.error(
                at,
                format!("unterminated {what}: the grammar ends after `\\`"),
            ));
        };
        self.pos += 1;
        let digits = match e {
            'n' => return Ok('\n'),
            't' => return Ok('\t'),
            'r' => return Ok('\r'),
            '\\' | '"' | '[' | ']' | '-' => return Ok(e),
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                return Err(self.error(
                    at,
                    format!(
                        "unknown escape `\\{}`: the escapes are \\n \\t \\r \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH",
                        e.escape_debug()
                    ),
                ));
            }
        };
        let mut value: u32 = 0;
        for _ in 0..digits {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                return Err(self.error(
                    at,
                    format!("`\\{e}` needs exactly {digits} hexadecimal digits"),
                ));
            };
            value = value * 16 + d;
            self.pos += 1;
        }
        char::from_u32(value).ok_or_else(|| {
            self.error(
                at,
                format!("`\\{e}{value:0digits$X}` is not a Unicode character (a surrogate or above U+10FFFF)"),
            )
        })
    }

    fn parse_literal(&mut self) -> Result<Node, GrammarError> {
        let open = self.pos;
        self.pos += 1;
        let mut text = Vec::new();
        loop {
            if self.peek() == Some('"') {
                self.pos += 1;
                break;
            }
            text.push(self.parse_char("literal \"...\"", open)?);
        }
        Ok(if text.is_empty() {
            Node::Empty
        } else {
            Node::Literal(text)
        })
    }

    fn parse_class(&mut self) -> Result<Node, GrammarError> {
        let open = self.pos;
        self.pos += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            if self.peek() == Some(']') {
                self.pos += 1;
                break;
            }
            let at = self.pos;
            let lo = self.parse_char("character class [...]", open)?;
            let hi = if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                self.parse_char("character class [...]", open)?
            } else {
                lo
            };
            if hi < lo {
                return Err(self.error(
                    at,
                    format!(
                        "the range `{}-{}` ends before it starts",
                        lo.escape_debug(),
                        hi.escape_debug()
                    ),
                ));
            }
            ranges.push((lo, hi));
        }
        if ranges.is_empty() && !negated {
            return Err(self.error(open, "the character class `[]` matches nothing"));
        }
        Ok(Node::Class { negated, ranges })
    }

    fn to_lark(&self, lift: bool) -> Result<String, GrammarError> {
        let index: HashMap<&str, usize> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let Some(&root) = index.get("root") else {
            return Err(GrammarError::new(
                "invalid GBNF grammar: there is no `root` rule: generation starts at `root ::= ...`",
            ));
        };
        for rule in &self.rules {
            self.check_refs(&rule.body, &index)?;
        }
        let bodies: Vec<&Node> = self.rules.iter().map(|r| &r.body).collect();
        let mut em = Emitter {
            index: &index,
            bodies: &bodies,
            lifted: if lift {
                lexemes::liftable(&bodies, &index, root)
            } else {
                HashSet::new()
            },
            terminals: Vec::new(),
        };
        let mut out = String::new();
        let _ = writeln!(out, "start: {}", lark_rule_name(root, "root"));
        for (i, rule) in self.rules.iter().enumerate() {
            let mut body = String::new();
            em.emit(&rule.body, &mut body);
            let _ = writeln!(out, "{}: {}", lark_rule_name(i, &rule.name), body);
        }
        for (i, def) in em.terminals.iter().enumerate() {
            let _ = writeln!(out, "L{i}: {def}");
        }
        Ok(out)
    }

    /// Every rule a body uses is defined.
    fn check_refs(&self, node: &Node, index: &HashMap<&str, usize>) -> Result<(), GrammarError> {
        match node {
            Node::Ref { name, at } if !index.contains_key(name.as_str()) => Err(self.error(
                *at,
                format!("rule `{name}` is used but never defined: add `{name} ::= ...`"),
            )),
            Node::Seq(items) | Node::Alt(items) => {
                items.iter().try_for_each(|i| self.check_refs(i, index))
            }
            Node::Repeat { node, .. } => self.check_refs(node, index),
            _ => Ok(()),
        }
    }
}

/// Writes the Lark grammar: rules one to one, repetitions the analysis lifted as terminals.
struct Emitter<'a> {
    index: &'a HashMap<&'a str, usize>,
    bodies: &'a [&'a Node],
    /// Repetitions (by node address) that become one lexeme (`lexemes.rs`).
    lifted: HashSet<usize>,
    /// Definitions of the terminals `L0`, `L1`, ...
    terminals: Vec<String>,
}

impl Emitter<'_> {
    /// Write `node` as a Lark expansion (references were checked by `check_refs`).
    fn emit(&mut self, node: &Node, out: &mut String) {
        match node {
            Node::Empty => out.push_str("\"\""),
            Node::Literal(text) => {
                if text.len() > 1 {
                    out.push('(');
                }
                for (i, &c) in text.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    lark_string(&[c], out);
                }
                if text.len() > 1 {
                    out.push(')');
                }
            }
            Node::Class { .. } | Node::Any => class_regex(node, out),
            Node::Ref { name, .. } => {
                let i = self.index.get(name.as_str()).copied().unwrap_or(0);
                out.push_str(&lark_rule_name(i, name));
            }
            Node::Seq(items) => {
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    self.emit(item, out);
                }
                out.push(')');
            }
            Node::Alt(alts) => {
                out.push('(');
                for (i, alt) in alts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" | ");
                    }
                    self.emit(alt, out);
                }
                out.push(')');
            }
            Node::Repeat { max: Some(0), .. } => {
                // `x{0}` / `x{0,0}`: the empty string.
                out.push_str("\"\"");
            }
            Node::Repeat {
                node: inner,
                min,
                max,
            } if self.lifted.contains(&(node as *const Node as usize)) => {
                // One lexeme: `x` repeated at least once, optional when the minimum is 0.
                let mut def = String::from("(");
                self.terminal(inner, &mut def);
                def.push(')');
                repetition((*min).max(1), *max, &mut def);
                let name = format!("L{}", self.terminals.len());
                self.terminals.push(def);
                out.push_str(&name);
                if *min == 0 {
                    out.push('?');
                }
            }
            Node::Repeat {
                node: inner,
                min,
                max,
            } => {
                out.push('(');
                self.emit(inner, out);
                out.push(')');
                repetition(*min, *max, out);
            }
        }
    }

    /// Write `node` as a Lark terminal expression (one regular language; rules inlined — the
    /// analysis only lifts repetitions whose rules are not recursive).
    fn terminal(&self, node: &Node, out: &mut String) {
        match node {
            Node::Empty => out.push_str("\"\""),
            Node::Literal(text) => lark_string(text, out),
            Node::Class { .. } | Node::Any => class_regex(node, out),
            Node::Ref { name, .. } => {
                let i = self.index.get(name.as_str()).copied().unwrap_or(0);
                out.push('(');
                self.terminal(self.bodies[i], out);
                out.push(')');
            }
            Node::Seq(items) | Node::Alt(items) => {
                let sep = if matches!(node, Node::Seq(_)) {
                    " "
                } else {
                    " | "
                };
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(sep);
                    }
                    self.terminal(item, out);
                }
                out.push(')');
            }
            Node::Repeat {
                node: inner,
                min,
                max,
            } => {
                out.push('(');
                self.terminal(inner, out);
                out.push(')');
                repetition(*min, *max, out);
            }
        }
    }
}

/// `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}` after an expansion.
fn repetition(min: u32, max: Option<u32>, out: &mut String) {
    match (min, max) {
        (0, None) => out.push('*'),
        (1, None) => out.push('+'),
        (0, Some(1)) => out.push('?'),
        (m, None) => {
            let _ = write!(out, "{{{m},}}");
        }
        (m, Some(n)) if m == n => {
            let _ = write!(out, "{{{m}}}");
        }
        (m, Some(n)) => {
            let _ = write!(out, "{{{m},{n}}}");
        }
    }
}

/// A class or `.` as a one-character Lark regex, every character as `\x{..}`.
fn class_regex(node: &Node, out: &mut String) {
    match node {
        Node::Class {
            negated: true,
            ranges,
        } if ranges.is_empty() => out.push_str("/(?s:.)/"),
        Node::Class { negated, ranges } => {
            out.push_str("/[");
            if *negated {
                out.push('^');
            }
            for &(lo, hi) in ranges {
                let _ = write!(out, "\\x{{{:X}}}", lo as u32);
                if hi != lo {
                    let _ = write!(out, "-\\x{{{:X}}}", hi as u32);
                }
            }
            out.push_str("]/");
        }
        _ => out.push_str("/(?s:.)/"),
    }
}

/// Lark rule names are lowercase; GBNF's may have capitals and start with a digit. The index
/// keeps `Foo` and `foo` apart.
fn lark_rule_name(i: usize, name: &str) -> String {
    format!("r{i}_{}", name.to_ascii_lowercase())
}

/// A Lark string (JSON string syntax): quotes, backslashes and control characters escaped,
/// everything else as itself.
fn lark_string(text: &[char], out: &mut String) {
    out.push('"');
    for &c in text {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_is_split_into_characters() {
        let lark = gbnf_to_lark("root ::= \"ab\"").unwrap();
        assert_eq!(lark, "start: r0_root\nr0_root: (\"a\" \"b\")\n");
    }
}
