//! What a schema means for generation, where JSON Schema leaves the output unbounded:
//!
//! - **Objects are closed.** An object schema that lists `properties` and says nothing about
//!   other keys allows none. JSON Schema itself allows any extra key, but a schema sent for
//!   generation almost always means "these fields" (Pydantic and Zod emit it that way), and an
//!   open object lets a model invent keys without end. llama.cpp's and XGrammar's converters
//!   close such objects by default for the same reason; `additionalProperties: true` (or a
//!   schema) is kept.
//! - **Numbers are bounded in length.** JSON Schema bounds a number's value, not its digits, so
//!   a model could write digits until `max_tokens`. Like llama.cpp's grammars (16 digits per
//!   part), a `number` or `integer` without a bound gets one: at most 16 integer digits
//!   (|x| < 10^16), and a `number` without `multipleOf` at most [`MAX_FRACTION_DIGITS`] digits
//!   after the point (`multipleOf: 1e-6`). Every output still validates against the schema as
//!   sent; only these extremes cannot be written.

use serde_json::Value;

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "additionalProperties",
    "propertyNames",
];
/// Keywords whose value is a list of subschemas.
const LIST: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems", "items"];
/// Keywords whose value maps names to subschemas.
const MAP: &[&str] = &["properties", "patternProperties", "$defs", "definitions"];

/// The most digits after the decimal point of a generated `number` without `multipleOf`.
/// (llguidance's `multipleOf` automaton computes `10^digits` in 32 bits, so at most 9 would
/// work; 6 is what `printf("%f")` writes.)
pub const MAX_FRACTION_DIGITS: u32 = 6;
/// The largest magnitude of a generated `integer` without bounds: 16 digits.
const MAX_INTEGER: i64 = 9_999_999_999_999_999;

/// Bound `schema` for generation (module docs): close every object schema (the root and every
/// subschema) that has `properties` and neither `additionalProperties` nor
/// `patternProperties`/`unevaluatedProperties`, and give every `number`/`integer` schema
/// without bounds the length bounds. Iterative, so a deeply nested schema cannot overflow the
/// stack.
pub fn bound_for_generation(schema: &mut Value) {
    let mut stack: Vec<&mut Value> = vec![schema];
    while let Some(node) = stack.pop() {
        let Value::Object(obj) = node else {
            continue;
        };
        if obj.contains_key("properties")
            && !obj.contains_key("additionalProperties")
            && !obj.contains_key("patternProperties")
            && !obj.contains_key("unevaluatedProperties")
        {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        bound_number(obj);
        for (key, value) in obj.iter_mut() {
            let key = key.as_str();
            let (is_map, is_list) = (value.is_object(), value.is_array());
            if is_map && ONE.contains(&key) {
                stack.push(value);
            } else if is_map && MAP.contains(&key) {
                if let Value::Object(map) = value {
                    stack.extend(map.values_mut());
                }
            } else if is_list
                && LIST.contains(&key)
                && let Value::Array(list) = value
            {
                stack.extend(list.iter_mut());
            }
        }
    }
}

/// The most digits after the point a `multipleOf` may have: llguidance's automaton for it
/// computes `10^digits` in 32 bits.
pub const MAX_MULTIPLE_OF_DIGITS: i32 = 9;

/// Refuse what the grammar engine would get wrong rather than reject: a `multipleOf` anywhere
/// in `schema` with more than [`MAX_MULTIPLE_OF_DIGITS`] digits after the point, or larger
/// than 32 bits once scaled (llguidance's arithmetic for it would overflow). The error names
/// the value and the fix.
pub fn check_supported(schema: &Value) -> Result<(), crate::GrammarError> {
    let mut stack: Vec<&Value> = vec![schema];
    while let Some(node) = stack.pop() {
        match node {
            Value::Object(obj) => {
                if let Some(d) = obj.get("multipleOf").and_then(Value::as_f64)
                    && d > 0.0
                    && !(0..=MAX_MULTIPLE_OF_DIGITS).any(|k| {
                        let scaled = d * 10f64.powi(k);
                        (scaled - scaled.round()).abs() <= 1e-6
                            && scaled.round() >= 1.0
                            && scaled.round() <= f64::from(u32::MAX)
                    })
                {
                    return Err(crate::GrammarError::new(format!(
                        "unsupported `multipleOf` {d}: the engine handles multiples with at \
                         most {MAX_MULTIPLE_OF_DIGITS} digits after the point and below 2^32 \
                         once scaled (e.g. 0.01, 1e-6, 250): use one of those"
                    )));
                }
                stack.extend(obj.values());
            }
            Value::Array(list) => stack.extend(list),
            _ => {}
        }
    }
    Ok(())
}

/// The length bounds of a `number`/`integer` schema (or a type list with one of them) that has
/// none of its own on that side.
fn bound_number(obj: &mut serde_json::Map<String, Value>) {
    let has = |obj: &serde_json::Map<String, Value>, t: &str| match obj.get("type") {
        Some(Value::String(s)) => s == t,
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(t)),
        _ => false,
    };
    let number = has(obj, "number");
    if !number && !has(obj, "integer") {
        return;
    }
    // A number bound by 10^16 is written with at most 16 integer digits either way.
    let (low, high) = if number {
        (Value::from(-1e16), Value::from(1e16))
    } else {
        (Value::from(-MAX_INTEGER), Value::from(MAX_INTEGER))
    };
    if !obj.contains_key("minimum") && !obj.contains_key("exclusiveMinimum") {
        obj.insert("minimum".into(), low);
    }
    if !obj.contains_key("maximum") && !obj.contains_key("exclusiveMaximum") {
        obj.insert("maximum".into(), high);
    }
    if number && !obj.contains_key("multipleOf") {
        obj.insert(
            "multipleOf".into(),
            Value::from(10f64.powi(-(MAX_FRACTION_DIGITS as i32))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_with_properties_are_closed_everywhere_and_explicit_choices_kept() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
                "open": {"type": "object", "properties": {}, "additionalProperties": true},
                "dict": {"type": "object", "additionalProperties": {"type": "object",
                    "properties": {"y": {}}}},
                "list": {"type": "array", "items": {"properties": {"z": {}}}},
                "any": {"anyOf": [{"properties": {"q": {}}}, {"type": "null"}]},
                "pattern": {"properties": {}, "patternProperties": {"^p": {}}}
            },
            "$defs": {"D": {"type": "object", "properties": {"d": {}}}},
            "properties_only_named_so": {"properties": "not a schema map"}
        });
        bound_for_generation(&mut s);
        let closed = |v: &Value| v.get("additionalProperties") == Some(&json!(false));
        assert!(closed(&s));
        assert!(closed(&s["properties"]["a"]));
        assert_eq!(s["properties"]["open"]["additionalProperties"], json!(true));
        assert!(!closed(&s["properties"]["dict"]));
        assert!(closed(&s["properties"]["dict"]["additionalProperties"]));
        assert!(closed(&s["properties"]["list"]["items"]));
        assert!(closed(&s["properties"]["any"]["anyOf"][0]));
        assert!(
            s["properties"]["any"]["anyOf"][1]
                .get("additionalProperties")
                .is_none()
        );
        assert!(!closed(&s["properties"]["pattern"]));
        assert!(closed(&s["$defs"]["D"]));
        // A plain `{"type": "object"}` (any object) stays open.
        let mut any = json!({"type": "object"});
        bound_for_generation(&mut any);
        assert_eq!(any, json!({"type": "object"}));
    }

    #[test]
    fn multiples_the_engine_cannot_enforce_are_refused() {
        for ok in [
            json!(0.5),
            json!(1e-6),
            json!(1e-9),
            json!(250),
            json!(0.25),
        ] {
            assert!(check_supported(&json!({"multipleOf": ok})).is_ok(), "{ok}");
        }
        for bad in [json!(1e-10), json!(1e-16), json!(0.1234567891), json!(5e12)] {
            let e =
                check_supported(&json!({"properties": {"x": {"multipleOf": bad}}})).unwrap_err();
            assert!(e.message.contains("multipleOf"), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_get_length_bounds_unless_they_have_their_own() {
        let mut s = json!({"properties": {
            "n": {"type": "number"},
            "i": {"type": ["integer", "null"]},
            "own": {"type": "number", "minimum": 0, "exclusiveMaximum": 5, "multipleOf": 0.5},
            "s": {"type": "string"}
        }});
        bound_for_generation(&mut s);
        let p = &s["properties"];
        assert_eq!(p["n"]["minimum"], json!(-1e16));
        assert_eq!(p["n"]["maximum"], json!(1e16));
        assert_eq!(p["n"]["multipleOf"], json!(1e-6));
        assert_eq!(p["i"]["maximum"], json!(MAX_INTEGER));
        assert!(p["i"].get("multipleOf").is_none());
        assert_eq!(
            p["own"],
            json!({"type": "number", "minimum": 0, "exclusiveMaximum": 5, "multipleOf": 0.5})
        );
        assert_eq!(p["s"], json!({"type": "string"}));
    }
}
