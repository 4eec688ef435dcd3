//! A tiny YAML model ([`Y`]) and its writer, for the generated deployment files (`compose.rs`,
//! `k8s.rs`). Every scalar that is not a plain safe identifier is double-quoted ([`scalar`]), so
//! YAML 1.1 readers (docker-compose v1, PyYAML, kubectl's go-yaml paths) and YAML 1.2 readers
//! read the same values; the output depends only on the node, so generation is deterministic.
//!
//! This module does NOT parse YAML.

use std::fmt::Write as _;

/// A YAML node as this generator writes it.
#[derive(Debug, Clone)]
pub enum Y {
    /// A string, quoted by [`scalar`] unless it is a plain safe identifier.
    Str(String),
    Bool(bool),
    Int(u64),
    /// A list of strings in flow style: `["a", "b"]`.
    Flow(Vec<String>),
    /// A block list.
    List(Vec<Y>),
    /// A block mapping; keys in the given order; an optional comment line above an entry.
    Map(Vec<(String, Y, Option<String>)>),
}

pub fn st(s: impl Into<String>) -> Y {
    Y::Str(s.into())
}

pub fn flow<S: AsRef<str>>(items: &[S]) -> Y {
    Y::Flow(items.iter().map(|s| s.as_ref().to_string()).collect())
}

pub fn map(entries: Vec<(&str, Y)>) -> Y {
    Y::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v, None))
            .collect(),
    )
}

/// A YAML scalar for a string value: bare only when it is a plain safe identifier (a letter,
/// then letters, digits, `-`, `_`, `.`, `/`) that no YAML 1.1 or 1.2 reader turns into a bool or
/// null; otherwise double-quoted with escapes. Numbers, octal-looking strings (`0755`), floats
/// (`1e3`), `yes`/`on`/`off`, ports (`8080:8080`), `${…}` and anything with spaces are quoted.
pub fn scalar(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let mut chars = s.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str());
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn write_node(out: &mut String, node: &Y, indent: usize) {
    let pad = " ".repeat(indent);
    match node {
        Y::Map(entries) => {
            for (k, v, comment) in entries {
                if let Some(c) = comment {
                    for line in c.lines() {
                        let _ = writeln!(out, "{pad}# {line}");
                    }
                }
                let key = scalar(k);
                if is_block(v) {
                    let _ = writeln!(out, "{pad}{key}:");
                    write_node(out, v, indent + 2);
                } else {
                    let _ = writeln!(out, "{pad}{key}: {}", inline(v));
                }
            }
        }
        Y::List(items) => {
            for item in items {
                if is_block(item) {
                    // Nested block under a dash: write it indented, then put the dash on its
                    // first line.
                    let mut inner = String::new();
                    write_node(&mut inner, item, indent + 2);
                    let rest = &inner[indent + 2..];
                    let _ = write!(out, "{pad}- {rest}");
                } else {
                    let _ = writeln!(out, "{pad}- {}", inline(item));
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other));
        }
    }
}

fn inline(node: &Y) -> String {
    match node {
        Y::Str(s) => scalar(s),
        Y::Bool(b) => b.to_string(),
        Y::Int(i) => i.to_string(),
        Y::Flow(items) => {
            let parts: Vec<String> = items.iter().map(|s| scalar(s)).collect();
            format!("[{}]", parts.join(", "))
        }
        Y::List(e) if e.is_empty() => "[]".into(),
        Y::Map(e) if e.is_empty() => "{}".into(),
        Y::List(_) | Y::Map(_) => unreachable!("block nodes are not inline"),
    }
}

/// A non-empty list or mapping (written on its own lines); empty ones are written `[]`/`{}`.
fn is_block(node: &Y) -> bool {
    match node {
        Y::List(e) => !e.is_empty(),
        Y::Map(e) => !e.is_empty(),
        _ => false,
    }
}

/// One YAML document: `node` written at the top level.
pub fn document(node: &Y) -> String {
    let mut out = String::new();
    write_node(&mut out, node, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_a_yaml_1_1_reader_would_retype_are_quoted() {
        for (raw, want) in [
            ("yes", r#""yes""#),
            ("No", r#""No""#),
            ("on", r#""on""#),
            ("OFF", r#""OFF""#),
            ("y", r#""y""#),
            ("true", r#""true""#),
            ("null", r#""null""#),
            ("~", r#""~""#),
            ("0755", r#""0755""#),
            ("1e3", r#""1e3""#),
            ("0x1F", r#""0x1F""#),
            ("10", r#""10""#),
            (".5", r#"".5""#),
            ("8080:8080", r#""8080:8080""#),
            ("1:30", r#""1:30""#),
            ("65532:65532", r#""65532:65532""#),
            ("", r#""""#),
            ("a b", r#""a b""#),
            ("${X:-1}", r#""${X:-1}""#),
            ("say \"hi\"\\", r#""say \"hi\"\\""#),
            ("line\nnext", r#""line\nnext""#),
            ("-", r#""-""#),
            ("#x", r##""#x""##),
            ("key: v", r#""key: v""#),
        ] {
            assert_eq!(scalar(raw), want, "{raw:?}");
        }
        for plain in [
            "serve",
            "bitnet-server",
            "unless-stopped",
            "ALL",
            "a.b_c-d/e",
        ] {
            assert_eq!(scalar(plain), plain);
        }
    }

    #[test]
    fn block_lists_and_maps_nest() {
        let doc = map(vec![(
            "a",
            Y::List(vec![
                map(vec![("b", Y::Int(1)), ("c", st("yes"))]),
                st("on"),
            ]),
        )]);
        assert_eq!(document(&doc), "a:\n  - b: 1\n    c: \"yes\"\n  - \"on\"\n");
        let empty = map(vec![
            ("m", map(vec![])),
            ("l", Y::List(vec![map(vec![]), Y::List(vec![])])),
        ]);
        assert_eq!(document(&empty), "m: {}\nl:\n  - {}\n  - []\n");
    }
}
