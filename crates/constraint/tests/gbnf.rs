//! GBNF → Lark: each construct accepts exactly its language (fed byte by byte through the mask),
//! and each malformed grammar is an error naming the place and what was expected.

mod common;

use bitnet_constraint::{Grammar, MAX_GRAMMAR_BYTES, Vocabulary, gbnf_to_lark};
use bitnet_rng::SplitMix64;
use common::*;

fn g(text: &str) -> Grammar {
    Grammar::Gbnf(text.to_string())
}

fn yes(v: &Vocabulary, grammar: &str, text: &str) {
    assert!(
        accepts_text(v, &g(grammar), text),
        "{grammar:?} should accept {text:?}"
    );
}

fn no(v: &Vocabulary, grammar: &str, text: &str) {
    assert!(
        !accepts_text(v, &g(grammar), text),
        "{grammar:?} should reject {text:?}"
    );
}

fn err(grammar: &str) -> String {
    match gbnf_to_lark(grammar) {
        Ok(lark) => match test_vocab().compile(&g(grammar)) {
            Ok(_) => panic!("{grammar:?} should be an error, got {lark}"),
            Err(e) => e.message,
        },
        Err(e) => e.message,
    }
}

/// llama.cpp's JSON grammar (its `json.gbnf`), written out here.
const JSON_GBNF: &str = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;

#[test]
fn json_grammar() {
    let v = test_vocab();
    yes(
        &v,
        JSON_GBNF,
        r#"{"a": [1, 2.5, "x\n\u00e9"], "b": {"c": null, "d": true}}"#,
    );
    yes(&v, JSON_GBNF, "{}");
    yes(&v, JSON_GBNF, "{\n  \"k\": -0.5e+3 }");
    yes(&v, JSON_GBNF, r#"{"日本": "é"}"#);
    no(&v, JSON_GBNF, "{a: 1}");
    no(&v, JSON_GBNF, r#"{"a": 01}"#);
    no(&v, JSON_GBNF, r#"{"a": "\x"}"#);
    no(&v, JSON_GBNF, r#"{"a": 1"#);
    no(&v, JSON_GBNF, "[1]");
}

const ARITHMETIC: &str = r#"
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")"
number ::= [0-9]+
"#;

#[test]
fn arithmetic() {
    let v = test_vocab();
    yes(&v, ARITHMETIC, "1+2*(3-4)/56");
    yes(&v, ARITHMETIC, "((7))");
    no(&v, ARITHMETIC, "1+");
    no(&v, ARITHMETIC, "(1");
    no(&v, ARITHMETIC, "1++2");
    no(&v, ARITHMETIC, "");
}

#[test]
fn left_recursion_works() {
    let v = test_vocab();
    let grammar = "root ::= list\nlist ::= list \",\" item | item\nitem ::= [a-z]";
    yes(&v, grammar, "a,b,c");
    no(&v, grammar, "a,,b");
}

#[test]
fn character_classes() {
    let v = test_vocab();
    let grammar = r#"root ::= [a-cx] [^0-9\n] [\u00e9-\u00ea] [\-\]] ."#;
    yes(&v, grammar, "bZé-\n");
    yes(&v, grammar, "x ê]日");
    no(&v, grammar, "dZé-a");
    no(&v, grammar, "b5é-a");
    no(&v, grammar, "b\né-a");
    no(&v, grammar, "bZè-a");
    no(&v, grammar, "bZé+a");
    // `.` is one character, of any length in bytes, newlines included.
    yes(&v, "root ::= . . .", "a日\n");
    no(&v, "root ::= . .", "abc");
    // `[^]` is any character; the empty class is an error.
    yes(&v, "root ::= [^]", "\"");
}

#[test]
fn repetition_bounds() {
    let v = test_vocab();
    let grammar = r#"root ::= "a"{2,3} "b"{2} "c"{1,} "d"? "e"* ("f" "g"){0,1}"#;
    yes(&v, grammar, "aabbc");
    yes(&v, grammar, "aaabbcccdeeefg");
    no(&v, grammar, "abbc");
    no(&v, grammar, "aaaabbc");
    no(&v, grammar, "aabbbc");
    no(&v, grammar, "aabb");
    no(&v, grammar, "aabbcdd");
    no(&v, grammar, "aabbcfgfg");
    yes(&v, "root ::= \"x\"{0} \"y\"", "y");
    yes(&v, "root ::= [0-9]{1,3}", "123");
    no(&v, "root ::= [0-9]{1,3}", "1234");
}

#[test]
fn escapes() {
    let v = test_vocab();
    let grammar = r#"root ::= "\x41\u00e9\U0001F600\t\"\\\n\r\[\]\-" [\x30-\x39]"#;
    yes(&v, grammar, "Aé😀\t\"\\\n\r[]-7");
    no(&v, grammar, "Aé😀\t\"\\\n\r[]-a");
}

#[test]
fn comments_and_layout() {
    let v = test_vocab();
    let grammar = "# a comment line\n\nroot ::= # after ::=\n  \"a\" # trailing\n  | \"b\" (\n  \"c\" # inside a group\n  \"d\"\n)\n\n# the end\n";
    yes(&v, grammar, "a");
    yes(&v, grammar, "bcd");
    no(&v, grammar, "bc");
    // `|` at the end of a line continues the rule too (llama.cpp's own form).
    yes(&v, "root ::= \"a\" |\n  \"b\"", "b");
    // Empty alternatives and an empty literal are the empty string.
    yes(&v, "root ::= \"x\" ws\nws ::= | \" \"", "x");
    yes(&v, "root ::= \"x\" ws\nws ::= | \" \"", "x ");
    yes(&v, "root ::= \"\" \"y\"", "y");
}

#[test]
fn exact_language_no_longest_match() {
    // A lexer matching longest-first would let `[0-9]*` swallow the final "0" and never end;
    // GBNF is character-level, and so is the translation.
    let v = test_vocab();
    yes(&v, "root ::= [0-9]* \"0\"", "120");
    yes(&v, "root ::= (\"a\" | \"ab\") \"bc\"", "abc");
    yes(&v, "root ::= (\"a\" | \"ab\") \"bc\"", "abbc");
    // Rule names differing only in case stay apart.
    yes(&v, "root ::= Foo foo\nFoo ::= \"A\"\nfoo ::= \"a\"", "Aa");
    yes(&v, "root ::= 1st\n1st ::= \"one\"", "one");
}

#[test]
fn generation_stays_in_the_grammar() {
    let v = test_vocab();
    let (tokens, _, eog) = test_tokens();
    let grammar = r#"root ::= item ("," " "? item){0,5}
item ::= [a-z]{1,6} | [0-9]{1,4} | "\"" [^"\\\x00-\x1F]{0,5} "\"""#;
    let rx = regex_automata::meta::Regex::new(
        r#"^(?:[a-z]{1,6}|[0-9]{1,4}|"[^"\\\x00-\x1F]{0,5}")(?:, ?(?:[a-z]{1,6}|[0-9]{1,4}|"[^"\\\x00-\x1F]{0,5}")){0,5}$"#,
    )
    .unwrap();
    let mut rng = SplitMix64(7);
    for _ in 0..40 {
        let mut c = gbnf(&v, grammar).unwrap();
        let out = generate(&mut c, &tokens, &eog, &mut rng, 400).unwrap();
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(rx.is_match(&text), "{text:?} is not in the grammar");
    }
}

#[test]
fn errors_name_the_place_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("item ::= \"a\"", "there is no `root` rule"),
        (
            "root ::= item\n",
            "at 1:10: rule `item` is used but never defined",
        ),
        ("root ::= \"abc", "at 1:10: unterminated literal \"...\""),
        (
            "root ::= [a-z",
            "at 1:10: unterminated character class [...]",
        ),
        ("root ::= \"\\q\"", "at 1:11: unknown escape `\\q`"),
        (
            "root ::= \"\\x4\"",
            "`\\x` needs exactly 2 hexadecimal digits",
        ),
        ("root ::= \"\\uD800\"", "is not a Unicode character"),
        (
            "root = \"a\"",
            "at 1:6: expected `::=` after the rule name `root`",
        ),
        ("root ::= \"a\" )", "at 1:14: unmatched `)`"),
        (
            "root ::= (\"a\" \"b\"",
            "expected `)` closing the group opened at 1:10, found the end of the grammar",
        ),
        ("root ::= \"a\"{3,2}", "has its maximum below its minimum"),
        (
            "root ::= \"a\"{x}",
            "expected a number in the repetition opened at 1:13",
        ),
        (
            "root ::= \"a\"{1;}",
            "expected `,` or `}` in the repetition",
        ),
        ("root ::= \"a\"{1000001}", "above the limit of 100000"),
        (
            "root ::= <[128009]>",
            "token references (`<[id]>`, `<name>`, `!<...>`) are not supported",
        ),
        ("root ::= <think> \"a\"", "token references"),
        (
            "root ::= \"a\"\nroot ::= \"b\"",
            "at 2:1: rule `root` is defined twice (first at 1:1)",
        ),
        ("root ::= []", "the character class `[]` matches nothing"),
        ("root ::= * \"a\"", "`*` must follow an element"),
        ("root ::= [z-a]", "the range `z-a` ends before it starts"),
        (
            "root ::= \"a\" b ::= \"c\"",
            "rule `b` must start on a new line",
        ),
        ("::= \"a\"", "at 1:1: expected a rule name"),
        ("root ::= \"a\" @", "at 1:14: expected a literal"),
    ];
    for (grammar, want) in cases {
        let got = err(grammar);
        assert!(
            got.contains(want),
            "{grammar:?}: {got:?} should contain {want:?}"
        );
        assert!(got.starts_with("invalid GBNF grammar"), "{got:?}");
    }
}

#[test]
fn limits() {
    let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
    assert!(
        err(&deep).contains("nested more than 64 deep"),
        "{}",
        err(&deep)
    );
    let big = format!("root ::= \"{}\"", "a".repeat(MAX_GRAMMAR_BYTES));
    assert!(
        err(&big).contains("the limit is 262144 bytes"),
        "{}",
        err(&big)
    );
    let chain = "root ::= \"a\"?????????";
    assert!(
        err(chain).contains("more than 8 repetition operators"),
        "{}",
        err(chain)
    );
}

#[test]
fn lexemes_are_lifted_where_safe() {
    let lark = |g: &str| gbnf_to_lark(g).unwrap();
    // JSON string content (inline, or through a rule used once) and bounded whitespace become
    // one lexeme each.
    let json = lark(JSON_GBNF);
    assert!(json.contains("\nL0: ") && json.contains("\nL1: "), "{json}");
    let via_rule =
        lark("root ::= \"\\\"\" char* \"\\\"\"\nchar ::= [^\"\\\\] | \"\\\\\" [\"\\\\n]");
    assert!(via_rule.contains("L0?"), "{via_rule}");
    // Not where the longest match would change the language.
    for g in [
        "root ::= [0-9]* \"0\"",
        "root ::= \"a\" [a-z]+ \"x\" | \"a\" [a-c] [a-z] \"y\"",
        "root ::= [a-z]+ [a-z0-9]",
        "root ::= (\"a\" | \"ab\")* \"c\"",
        // `char` is used twice: its positions may compete with each other.
        "root ::= \"\\\"\" char* \"\\\"\" | \"\\\"\" char \"!\"\nchar ::= [^\"\\\\]",
    ] {
        assert!(!lark(g).contains("\nL0:"), "{g} lifted: {}", lark(g));
    }
    let v = test_vocab();
    yes(
        &v,
        "root ::= \"\\\"\" char* \"\\\"\" | \"\\\"\" char \"!\"\nchar ::= [^\"\\\\]",
        "\"a!",
    );
    yes(
        &v,
        "root ::= \"a\" [a-z]+ \"x\" | \"a\" [a-c] [a-z] \"y\"",
        "abyy",
    );
    yes(
        &v,
        "root ::= \"a\" [a-z]+ \"x\" | \"a\" [a-c] [a-z] \"y\"",
        "abyx",
    );
    yes(&v, "root ::= [a-z]+ [a-z0-9]", "abc");
}

/// A random GBNF grammar over the characters a, b, c, x with up to three rules (recursion
/// allowed), written out as text.
fn random_grammar(rng: &mut SplitMix64) -> String {
    fn pick(rng: &mut SplitMix64, n: u64) -> u64 {
        rng.next_u64() % n
    }
    fn expr(rng: &mut SplitMix64, depth: u32, rules: u64) -> String {
        let atoms = [
            "\"a\"", "\"b\"", "\"ab\"", "\"x\"", "[a-b]", "[ac]", "[^a]", ".", "[a-c]", "\"\"",
        ];
        let k = if depth >= 3 {
            pick(rng, 2)
        } else {
            pick(rng, 6)
        };
        match k {
            0 => atoms[pick(rng, atoms.len() as u64) as usize].to_string(),
            1 => {
                if rules > 1 && pick(rng, 3) == 0 {
                    format!("r{}", pick(rng, rules - 1) + 1)
                } else {
                    atoms[pick(rng, atoms.len() as u64) as usize].to_string()
                }
            }
            2 => (0..2 + pick(rng, 2))
                .map(|_| expr(rng, depth + 1, rules))
                .collect::<Vec<_>>()
                .join(" "),
            3 => format!(
                "({})",
                (0..2 + pick(rng, 2))
                    .map(|_| expr(rng, depth + 1, rules))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
            _ => {
                let ops = ["*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}"];
                format!(
                    "({}){}",
                    expr(rng, depth + 1, rules),
                    ops[pick(rng, ops.len() as u64) as usize]
                )
            }
        }
    }
    let rules = 1 + pick(rng, 3);
    let mut text = format!("root ::= {}\n", expr(rng, 0, rules));
    for r in 1..rules {
        text.push_str(&format!("r{r} ::= {}\n", expr(rng, 1, rules)));
    }
    text
}

#[test]
fn lifted_and_character_level_translations_accept_the_same_strings() {
    // The lexeme analysis (src/gbnf/lexemes.rs) must never change the language: on random
    // grammars, the lifted translation and the all-character-level one agree on every string
    // tried (random strings over the alphabet and strings generated from the grammar).
    // Byte tokens and one end-of-generation token: generated strings stay short.
    let mut bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    bytes.push(b"<|eot|>".to_vec());
    let mut special = vec![false; 257];
    special[256] = true;
    let v = Vocabulary::new(bytes.clone(), special, vec![256]).unwrap();
    let mut rng = SplitMix64(0x9b_f0_18);
    let (mut lifted_grammars, mut compared) = (0, 0);
    for case in 0..400 {
        let text = random_grammar(&mut rng);
        let lifted = gbnf_to_lark(&text).unwrap();
        let exact = bitnet_constraint::gbnf_to_lark_char_level(&text).unwrap();
        if lifted == exact {
            continue;
        }
        let (gl, ge) = (Grammar::Lark(lifted.clone()), Grammar::Lark(exact.clone()));
        if v.compile(&ge).is_err() {
            continue; // a grammar with no string at all
        }
        lifted_grammars += 1;
        let mut samples: Vec<String> = Vec::new();
        for _ in 0..20 {
            let n = rng.next_u64() % 7;
            samples.push(
                (0..n)
                    .map(|_| ['a', 'b', 'c', 'x'][(rng.next_u64() % 4) as usize])
                    .collect(),
            );
        }
        for _ in 0..10 {
            let mut c = v.compile(&ge).unwrap();
            if let Ok(out) = generate(&mut c, &bytes, &[256], &mut rng, 12) {
                samples.push(String::from_utf8(out).unwrap());
            }
        }
        for s in &samples {
            let (a, b) = (accepts_text(&v, &gl, s), accepts_text(&v, &ge, s));
            assert_eq!(
                a, b,
                "case {case}: {s:?}: lifted {a}, character-level {b}\n{text}\n{lifted}\n{exact}"
            );
            compared += 1;
        }
    }
    assert!(
        lifted_grammars >= 50,
        "only {lifted_grammars} grammars had a lexeme lifted"
    );
    eprintln!("{lifted_grammars} grammars with lifted lexemes, {compared} strings compared");
}
