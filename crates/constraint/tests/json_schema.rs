//! JSON Schema: the output format, errors naming the keyword, and a property test — random
//! schemas from the supported subset, random generation under the mask, every output parsed
//! and checked by an independent validator (tests/common/validate.rs).

mod common;

use bitnet_constraint::{Grammar, MAX_GRAMMAR_BYTES};
use bitnet_rng::SplitMix64;
use common::validate::validate;
use common::*;
use serde_json::{Value, json};

fn schema_err(schema: Value) -> String {
    match test_vocab().compile(&Grammar::JsonSchema(schema.clone())) {
        Ok(_) => panic!("{schema} should be an error"),
        Err(e) => e.message,
    }
}

#[test]
fn output_format_is_fixed() {
    let v = test_vocab();
    let s = Grammar::JsonSchema(json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "string"}}},
        "required": ["a", "b"],
        "additionalProperties": false
    }));
    assert!(accepts_text(&v, &s, r#"{"a": 1, "b": ["x", "y"]}"#));
    assert!(!accepts_prefix(&v, &s, r#"{"a":1"#), "no space after ':'");
    assert!(!accepts_prefix(&v, &s, r#"{ "a""#), "no free whitespace");
    assert!(
        !accepts_prefix(&v, &s, r#"{"a": 1,"b""#),
        "', ' between items"
    );
    assert!(
        !accepts_prefix(&v, &s, "{\"a\": 1, \"b\": [\"x\",\n"),
        "no newlines"
    );
    assert!(
        !accepts_prefix(&v, &s, r#"{"c""#),
        "additionalProperties: false"
    );
    // json_object: any object, same formatting; not an array or a string.
    assert!(accepts_text(
        &v,
        &Grammar::JsonObject,
        r#"{"k": [1, {"z": null}], "t": true}"#
    ));
    assert!(!accepts_prefix(&v, &Grammar::JsonObject, "["));
    assert!(!accepts_prefix(&v, &Grammar::JsonObject, "\"a\""));
    assert!(!accepts_prefix(&v, &Grammar::JsonObject, " {"));
}

#[test]
fn unsupported_keywords_are_named() {
    let m = schema_err(json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}));
    assert!(
        m.contains("unsupported JSON Schema keyword `uniqueItems`: remove it"),
        "{m}"
    );
    let m = schema_err(json!({"type": "object", "properties": {
        "a": {"type": "array", "contains": {"type": "integer"}, "uniqueItems": true}}}));
    assert!(
        m.contains("keywords `contains`, `uniqueItems`: remove them"),
        "{m}"
    );
    let m = schema_err(json!({"not": {"type": "string"}}));
    assert!(m.contains("`not`"), "{m}");
    let m = schema_err(json!({"type": "object", "dependentRequired": {"a": ["b"]}}));
    assert!(m.contains("`dependentRequired`"), "{m}");
    let m = schema_err(json!({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}));
    assert!(
        m.contains("unsupported JSON Schema `oneOf`") && m.contains("use `anyOf`"),
        "{m}"
    );
    // Disjoint branches (a tagged union, as Pydantic writes one) are fine.
    let v = test_vocab();
    let tagged = Grammar::JsonSchema(json!({"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "a"}}, "required": ["kind"], "additionalProperties": false},
        {"type": "integer"}
    ]}));
    assert!(accepts_text(&v, &tagged, r#"{"kind": "a"}"#));
    assert!(accepts_text(&v, &tagged, "12"));
    let m = schema_err(json!({"type": "string", "format": "credit-card"}));
    assert!(
        m.contains("unsupported JSON Schema string format `credit-card`"),
        "{m}"
    );
    assert!(m.contains("date-time"), "{m}");
}

#[test]
fn invalid_schemas_are_clear_errors() {
    for (schema, want) in [
        (json!([1, 2]), "a schema must be a JSON object"),
        (json!("string"), "not a string"),
        (json!(true), "not a boolean"),
        (
            json!({"type": "strin"}),
            "invalid JSON schema: Invalid type: strin",
        ),
        (
            json!({"type": 7}),
            "type must be a string or array of strings",
        ),
        (
            json!({"type": "object", "properties": []}),
            "properties must be an object",
        ),
        (
            json!({"type": "string", "maxLength": -1}),
            "Expected positive integer for 'maxLength'",
        ),
        (json!({"$ref": "#/$defs/missing"}), "missing"),
        (
            json!({"type": "integer", "minimum": 5, "maximum": 1}),
            "invalid JSON schema",
        ),
        (
            json!({"x-guidance": {"whitespace_flexible": true}}),
            "`x-guidance` is not accepted",
        ),
    ] {
        let m = schema_err(schema.clone());
        assert!(m.contains(want), "{schema}: {m:?} should contain {want:?}");
        assert!(!m.contains('\n'), "one line: {m:?}");
    }
    // A schema with no value at all (a definition that is only itself) is refused up front,
    // not found out at the first token.
    let m = schema_err(json!({"$ref": "#/$defs/d", "$defs": {"d": {"$ref": "#/$defs/d"}}}));
    assert!(m.contains("allows no output at all"), "{m}");
    let big = json!({"description": "x".repeat(MAX_GRAMMAR_BYTES), "type": "object"});
    let m = schema_err(big);
    assert!(
        m.contains("the JSON schema is") && m.contains("the limit is 262144 bytes"),
        "{m}"
    );
}

/// Property names the generator draws from (some share prefixes, some need escapes).
const NAMES: &[&str] = &[
    "a", "ab", "name", "age", "x_y", "日本", "quo\"te", "sp ace", "id", "n2",
];

struct Gen {
    rng: SplitMix64,
    defs: serde_json::Map<String, Value>,
}

impl Gen {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn string_value(&mut self) -> Value {
        let pool = [
            "",
            "a",
            "xyz",
            "Hello",
            "é",
            "日本",
            "with space",
            "q\"uote",
            "back\\slash",
            "new\nline",
        ];
        json!(pool[self.below(pool.len() as u64) as usize])
    }

    fn schema(&mut self, depth: u32) -> Value {
        let leaf = depth >= 3;
        let kinds = if leaf { 9 } else { 13 };
        match self.below(kinds) {
            0 => {
                let max = self.below(9);
                let min = self.below(max + 1);
                json!({"type": "string", "minLength": min, "maxLength": max})
            }
            1 => {
                let mut opts: Vec<Value> = Vec::new();
                for _ in 0..1 + self.below(4) {
                    let s = self.string_value();
                    if !opts.contains(&s) {
                        opts.push(s);
                    }
                }
                json!({"type": "string", "enum": opts})
            }
            2 => json!({"const": self.string_value()}),
            3 => {
                let pats = [
                    "^[a-z]{1,6}$",
                    "^[A-Z][a-z]{0,4}$",
                    "^[0-9]{3}-[0-9]{2}$",
                    "^(yes|no|maybe)$",
                ];
                json!({"type": "string", "pattern": pats[self.below(pats.len() as u64) as usize]})
            }
            4 => {
                let lo = self.below(200) as i64 - 100;
                let hi = lo + self.below(300) as i64;
                match self.below(4) {
                    0 => json!({"type": "integer", "minimum": lo, "maximum": hi}),
                    1 => json!({"type": "integer", "minimum": lo}),
                    2 => {
                        json!({"type": "integer", "exclusiveMinimum": lo, "exclusiveMaximum": hi + 2})
                    }
                    _ => json!({"type": "integer"}),
                }
            }
            5 => {
                let lo = (self.below(2000) as f64 - 1000.0) / 8.0;
                let hi = lo + self.below(1000) as f64 / 4.0 + 0.5;
                // Always bounded: an unbounded number may draw an exponent serde_json cannot
                // hold (valid JSON all the same).
                if self.below(2) == 0 {
                    json!({"type": "number", "minimum": lo, "maximum": hi})
                } else {
                    json!({"type": "number", "exclusiveMinimum": lo, "exclusiveMaximum": hi})
                }
            }
            6 => json!({"type": "boolean"}),
            7 => json!({"type": "null"}),
            8 => json!({"enum": [1, "two", null, true, 2.5]}),
            9 | 10 => {
                let mut props = serde_json::Map::new();
                let mut required = Vec::new();
                for _ in 0..self.below(5) {
                    let name = NAMES[self.below(NAMES.len() as u64) as usize];
                    if props.contains_key(name) {
                        continue;
                    }
                    props.insert(name.to_string(), self.schema(depth + 1));
                    if self.below(3) > 0 {
                        required.push(json!(name));
                    }
                }
                json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
            }
            11 => {
                let min = self.below(3);
                let max = min + self.below(3);
                json!({"type": "array", "items": self.schema(depth + 1), "minItems": min, "maxItems": max})
            }
            _ => {
                if self.below(2) == 0 {
                    let n = 2 + self.below(2);
                    let subs: Vec<Value> = (0..n).map(|_| self.schema(depth + 1)).collect();
                    json!({"anyOf": subs})
                } else {
                    let name = format!("d{}", self.defs.len());
                    // Reserve the name before the definition's own definitions take one.
                    self.defs.insert(name.clone(), Value::Null);
                    let def = self.schema(depth + 1);
                    self.defs.insert(name.clone(), def);
                    json!({"$ref": format!("#/$defs/{name}")})
                }
            }
        }
    }
}

#[test]
fn random_schemas_generate_valid_json() {
    let v = test_vocab();
    let (tokens, _, eog) = test_tokens();
    let mut gen_ = Gen {
        rng: SplitMix64(0x5eed_0018),
        defs: serde_json::Map::new(),
    };
    let mut sampler = SplitMix64(42);
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..1000 {
        gen_.defs.clear();
        let mut schema = gen_.schema(0);
        if !gen_.defs.is_empty() {
            let obj = schema.as_object_mut().expect("object schema");
            obj.insert("$defs".to_string(), Value::Object(gen_.defs.clone()));
        }
        let mut c = match v.compile(&Grammar::JsonSchema(schema.clone())) {
            Ok(c) => c,
            Err(e) => panic!("case {case}: {schema} does not compile: {e}"),
        };
        let out = generate(&mut c, &tokens, &eog, &mut sampler, 3000)
            .unwrap_or_else(|e| panic!("case {case}: {schema}: {e}"));
        let text = String::from_utf8(out).unwrap_or_else(|e| panic!("case {case}: not UTF-8: {e}"));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("case {case}: {schema}: {text:?} does not parse: {e}"));
        if let Err(why) = validate(&schema, &schema, &value, "$") {
            panic!("case {case}: {schema}: {text} is invalid: {why}");
        }
        *kinds.entry(kind(&value).to_string()).or_default() += 1;
    }
    // The generator reached every kind of value.
    for k in ["object", "array", "string", "number", "bool", "null"] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "no {k} generated: {kinds:?}"
        );
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[test]
fn json_object_generates_objects() {
    // Any object: nesting is free, so generation is steered only by the random draw; every
    // output that ends within the budget must be an object.
    let v = test_vocab();
    let (tokens, _, eog) = test_tokens();
    let mut rng = SplitMix64(3);
    let mut ended = 0;
    for _ in 0..30 {
        let mut c = v.compile(&Grammar::JsonObject).unwrap();
        if let Ok(out) = generate(&mut c, &tokens, &eog, &mut rng, 300) {
            match serde_json::from_slice::<Value>(&out) {
                Ok(value) => {
                    assert!(value.is_object(), "{value}");
                    ended += 1;
                }
                // Valid JSON (RFC 8259 leaves number range to the reader) that serde_json
                // cannot hold, like `1e99999`.
                Err(e) if e.to_string().starts_with("number out of range") => {}
                Err(e) => panic!("{:?} does not parse: {e}", String::from_utf8_lossy(&out)),
            }
        }
    }
    assert!(ended > 0, "no generation ended");
}
