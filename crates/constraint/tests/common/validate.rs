//! An independent JSON Schema checker for the subset the property test generates (type,
//! properties, required, additionalProperties, items, minItems, maxItems, enum, const,
//! minLength, maxLength, pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum, anyOf,
//! local `$ref` into `$defs`). Written from the JSON Schema 2020-12 validation spec, sharing no
//! code with llguidance. Anything else in a schema is an error, so the generator cannot drift
//! outside what is checked.

use serde_json::Value;

/// `Ok(())` if `v` is valid against `schema` (resolved against `root`), else the first reason.
pub fn validate(root: &Value, schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let s = schema
        .as_object()
        .ok_or_else(|| format!("{path}: schema is not an object"))?;
    for (k, kw) in s {
        match k.as_str() {
            "$defs" => {}
            "$ref" => {
                let r = kw.as_str().ok_or("$ref not a string")?;
                let name = r
                    .strip_prefix("#/$defs/")
                    .ok_or_else(|| format!("unsupported $ref {r}"))?;
                let target = root
                    .get("$defs")
                    .and_then(|d| d.get(name))
                    .ok_or_else(|| format!("$ref {r} not found"))?;
                validate(root, target, v, path)?;
            }
            "type" => {
                let ok = match kw {
                    Value::String(t) => is_type(v, t),
                    Value::Array(ts) => {
                        ts.iter().any(|t| t.as_str().is_some_and(|t| is_type(v, t)))
                    }
                    _ => return Err("bad type".into()),
                };
                if !ok {
                    return Err(format!("{path}: {v} is not of type {kw}"));
                }
            }
            "enum" => {
                let opts = kw.as_array().ok_or("enum not an array")?;
                if !opts.iter().any(|o| json_eq(o, v)) {
                    return Err(format!("{path}: {v} not in enum {kw}"));
                }
            }
            "const" => {
                if !json_eq(kw, v) {
                    return Err(format!("{path}: {v} != const {kw}"));
                }
            }
            "anyOf" => {
                let subs = kw.as_array().ok_or("anyOf not an array")?;
                let mut reasons = Vec::new();
                let mut any = false;
                for sub in subs {
                    match validate(root, sub, v, path) {
                        Ok(()) => {
                            any = true;
                            break;
                        }
                        Err(e) => reasons.push(e),
                    }
                }
                if !any {
                    return Err(format!("{path}: no anyOf branch matches: {reasons:?}"));
                }
            }
            "properties" | "required" | "additionalProperties" => {
                if let Value::Object(obj) = v {
                    check_object(root, s, obj, path)?;
                }
            }
            "items" => {
                if let Value::Array(items) = v {
                    for (i, item) in items.iter().enumerate() {
                        validate(root, kw, item, &format!("{path}[{i}]"))?;
                    }
                }
            }
            "minItems" | "maxItems" => {
                if let Value::Array(items) = v {
                    let n = kw.as_u64().ok_or("bad bound")? as usize;
                    if (k == "minItems" && items.len() < n) || (k == "maxItems" && items.len() > n)
                    {
                        return Err(format!("{path}: {} items violates {k} {n}", items.len()));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let Value::String(text) = v {
                    let n = kw.as_u64().ok_or("bad bound")? as usize;
                    let len = text.chars().count();
                    if (k == "minLength" && len < n) || (k == "maxLength" && len > n) {
                        return Err(format!("{path}: length {len} violates {k} {n}"));
                    }
                }
            }
            "pattern" => {
                if let Value::String(text) = v {
                    let rx = regex_automata::meta::Regex::new(kw.as_str().ok_or("bad pattern")?)
                        .map_err(|e| format!("pattern: {e}"))?;
                    if !rx.is_match(text.as_str()) {
                        return Err(format!("{path}: {text:?} does not match {kw}"));
                    }
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if let Value::Number(n) = v {
                    let x = n.as_f64().ok_or("number")?;
                    let b = kw.as_f64().ok_or("bad bound")?;
                    let ok = match k.as_str() {
                        "minimum" => x >= b,
                        "maximum" => x <= b,
                        "exclusiveMinimum" => x > b,
                        _ => x < b,
                    };
                    if !ok {
                        return Err(format!("{path}: {x} violates {k} {b}"));
                    }
                }
            }
            other => return Err(format!("the checker does not know keyword {other}")),
        }
    }
    Ok(())
}

fn check_object(
    root: &Value,
    s: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    let empty = serde_json::Map::new();
    let props = s
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req {
            let r = r.as_str().ok_or("required not strings")?;
            if !obj.contains_key(r) {
                return Err(format!("{path}: missing required property {r}"));
            }
        }
    }
    for (key, val) in obj {
        if let Some(ps) = props.get(key) {
            validate(root, ps, val, &format!("{path}.{key}"))?;
        } else {
            match s.get("additionalProperties") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    return Err(format!("{path}: additional property {key}"));
                }
                Some(ap) => validate(root, ap, val, &format!("{path}.{key}"))?,
            }
        }
    }
    Ok(())
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        _ => false,
    }
}

/// JSON equality with numbers compared by value (1 == 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}
