//! OpenAI tool calling (`tools`, `tool_choice`, `parallel_tool_calls`, the `tool` role) for
//! models with no native tool format.
//!
//! The format is generic JSON, taught through the system prompt ([`Tools::system_prompt`]) and
//! enforced by the grammar constraint ([`Tools::grammar`]): the assistant replies either with
//! plain text (tool_choice `auto` only; it never begins with `{`) or with exactly
//!
//! ```text
//! {"tool_calls": [{"name": "<function>", "arguments": {<object matching its parameters>}}, ...]}
//! ```
//!
//! (one element unless `parallel_tool_calls`; separators `", "` and `": "`, the constraint's
//! compact JSON). A reply is read back whole with [`parse_reply`] or, while streaming, piece by
//! piece with [`ToolStream`]; earlier turns that made tool calls, and `tool` messages, are
//! rendered into the same format by [`History`] so a follow-up looks like what the model was
//! taught.
//!
//! Refused with a 400 naming the parameter: the legacy `functions` parameter, non-function
//! tools, names outside OpenAI's `^[a-zA-Z0-9_-]{1,64}$` or repeated, parameters that are not a
//! JSON Schema of an object, more than [`MAX_TOOLS`] tools or more than the constraint's
//! grammar size limit, a `tool_choice` without tools or naming a function that is not in
//! `tools`, and (through [`Tools::grammar_error`]) parameters the constraint cannot enforce.
//!
//! This module does NOT run generation (the handler compiles [`Tools::grammar`] and submits
//! it); it does not write the response bodies, only the `tool_calls` parts of them.

use std::collections::HashMap;
use std::io;

use bitnet_constraint::{Grammar, GrammarError, MAX_GRAMMAR_BYTES, Vocabulary};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::params::type_name;

/// The most tools a request may declare (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// The longest function name (OpenAI's limit).
pub const MAX_NAME_LEN: usize = 64;

/// The JSON layout of every constrained JSON (`json_options` in crates/constraint/src/lib.rs):
/// no whitespace but the separators. The `%json` of the auto grammar takes its compile options
/// from its schema's `x-guidance`, so it is set there.
const JSON_LAYOUT: &str =
    r#"{"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}"#;

/// What a request allows the model to do with its tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool (the tools are not shown to the model).
    None,
    /// Reply with text or with tool calls (the default).
    Auto,
    /// Reply with one or more tool calls.
    Required,
    /// Reply with one call of this function.
    Named(String),
}

/// One callable function.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments object; always has `"type": "object"` (added when the
    /// client left `type` out; `{"type": "object", "properties": {}}` when it sent no schema).
    pub parameters: Value,
}

/// The tools of a request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): several calls in one reply.
    pub parallel: bool,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, message)
}

fn is_null(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// OpenAI's rule for function names: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An optional string field: absent or null is `None`, a string is kept, anything else is a 400
/// naming `param`.
fn optional_string(param: &str, v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            param,
            format!("`{param}` must be a string, got {}", type_name(other)),
        )),
    }
}

impl Tools {
    /// Check a chat request's tool fields. `Ok(None)` when the request has no tools (absent,
    /// null or `[]`): the request is answered as plain chat. The legacy `functions` parameter
    /// is refused (its replacement is `tools`), as are a `tool_choice` without tools, a named
    /// `tool_choice` that is not in `tools`, and any malformed tool; each error is a 400 naming
    /// the exact parameter path (e.g. `tools[2].function.parameters`) and the fix.
    pub fn parse(
        tools: Option<&Value>,
        tool_choice: Option<&Value>,
        parallel_tool_calls: Option<bool>,
        functions: Option<&Value>,
    ) -> Result<Option<Tools>, ApiError> {
        if !is_null(functions) {
            return Err(invalid(
                "functions",
                "the deprecated `functions` parameter is not supported: send the same \
                 definitions as `tools: [{\"type\": \"function\", \"function\": {\"name\": …, \
                 \"description\": …, \"parameters\": {…}}}]`, and `tool_choice` in place of \
                 `function_call`",
            ));
        }
        let items: &[Value] = match tools {
            None | Some(Value::Null) => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid(
                    "tools",
                    format!(
                        "`tools` must be an array of {{\"type\": \"function\", \"function\": \
                         {{…}}}} objects, got {}",
                        type_name(other)
                    ),
                ));
            }
        };
        if items.len() > MAX_TOOLS {
            return Err(invalid(
                "tools",
                format!(
                    "`tools` has {} entries; at most {MAX_TOOLS} are allowed: send only the \
                     tools this request may need",
                    items.len()
                ),
            ));
        }
        let mut functions: Vec<Function> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let function = parse_tool(i, item)?;
            if let Some(first) = functions.iter().position(|f| f.name == function.name) {
                return Err(invalid(
                    &format!("tools[{i}].function.name"),
                    format!(
                        "`tools[{i}].function.name` is {:?}, the name of tools[{first}] too; \
                         give each function a unique name",
                        function.name
                    ),
                ));
            }
            functions.push(function);
        }
        let choice = match tool_choice {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_choice(v)?),
        };
        if functions.is_empty() {
            if choice.is_some() {
                return Err(invalid(
                    "tool_choice",
                    "`tool_choice` is set but the request has no `tools`: declare the functions \
                     in `tools`, or leave `tool_choice` out",
                ));
            }
            return Ok(None);
        }
        let choice = choice.unwrap_or(ToolChoice::Auto);
        if let ToolChoice::Named(name) = &choice
            && !functions.iter().any(|f| &f.name == name)
        {
            let known: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
            return Err(invalid(
                "tool_choice.function.name",
                format!(
                    "`tool_choice` names the function {name:?}, which is not in `tools` (they \
                     are: {}); name one of them or add it to `tools`",
                    known.join(", ")
                ),
            ));
        }
        let tools = Tools {
            functions,
            choice,
            parallel: parallel_tool_calls.unwrap_or(true),
        };
        let size = tools.grammar_size();
        if size > MAX_GRAMMAR_BYTES {
            return Err(invalid(
                "tools",
                format!(
                    "the tools' definitions make a grammar of {size} bytes; the limit is \
                     {MAX_GRAMMAR_BYTES} bytes: send fewer tools or smaller parameter schemas"
                ),
            ));
        }
        Ok(Some(tools))
    }

    /// The length of the grammar text [`Tools::grammar`] hands to the constraint (the size
    /// bitnet-constraint limits to [`MAX_GRAMMAR_BYTES`]).
    fn grammar_size(&self) -> usize {
        match self.choice {
            ToolChoice::None => 0,
            ToolChoice::Auto => self.auto_lark(None).len(),
            ToolChoice::Required | ToolChoice::Named(_) => {
                serde_json::to_string(&self.reply_schema()).map_or(0, |s| s.len())
            }
        }
    }

    /// The 400 for `error`, the failure to compile [`Tools::grammar`] for `vocab`: it names
    /// `tools[i].function.parameters` of the first callable function whose parameters alone do
    /// not compile (an unsupported keyword, a broken `$ref`, …) with the constraint's reason,
    /// else `tools`.
    pub fn grammar_error(&self, vocab: &Vocabulary, error: &GrammarError) -> ApiError {
        let callable = self.callable();
        for (i, f) in self.functions.iter().enumerate() {
            if !callable.iter().any(|c| c.name == f.name) {
                continue;
            }
            if let Err(e) = vocab.compile(&Grammar::JsonSchema(f.parameters.clone())) {
                let param = format!("tools[{i}].function.parameters");
                return invalid(
                    &param,
                    format!(
                        "the parameters of function {:?} (`{param}`) cannot be enforced: {e}",
                        f.name
                    ),
                );
            }
        }
        invalid(
            "tools",
            format!("the tool-call grammar cannot be enforced: {error}"),
        )
    }

    /// The functions the model is shown and may call: all of them, or the named one.
    fn callable(&self) -> Vec<&Function> {
        match &self.choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Named(name) => self.functions.iter().filter(|f| &f.name == name).collect(),
            ToolChoice::Auto | ToolChoice::Required => self.functions.iter().collect(),
        }
    }

    /// The most calls in one reply: one unless `parallel_tool_calls` (a named choice is one
    /// call of that function).
    fn max_calls(&self) -> Option<usize> {
        match self.choice {
            ToolChoice::Auto | ToolChoice::Required if self.parallel => None,
            _ => Some(1),
        }
    }

    /// The instructions that tell the model its tools and the reply format; the handler puts
    /// them at the start of the system message (a new first system message when there is
    /// none). Each function is listed as one JSON line (name, description, parameters). Empty
    /// for `tool_choice: "none"`: the model is not shown tools it may not call.
    pub fn system_prompt(&self) -> String {
        let functions = self.callable();
        if functions.is_empty() {
            return String::new();
        }
        let mut out = String::from("You have access to the following functions:\n");
        for f in &functions {
            let mut entry = Map::new();
            entry.insert("name".into(), Value::String(f.name.clone()));
            if let Some(d) = &f.description {
                entry.insert("description".into(), Value::String(d.clone()));
            }
            entry.insert("parameters".into(), f.parameters.clone());
            out.push_str(&spaced_json(&Value::Object(entry)));
            out.push('\n');
        }
        let call = r#"{"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}"#;
        let how_many = if self.max_calls().is_none() {
            " To call several functions at once, put one object per call in the list."
        } else {
            " Put exactly one call in the list."
        };
        match &self.choice {
            ToolChoice::Auto => {
                out.push_str(&format!(
                    "\nTo call a function, reply with only this JSON and nothing else:\n{call}\n\
                     where the arguments are a JSON object matching the function's \
                     parameters.{how_many} Otherwise answer in plain text that does not start \
                     with \"{{\"."
                ));
            }
            ToolChoice::Required => {
                out.push_str(&format!(
                    "\nYou must call a function now: reply with only this JSON and nothing \
                     else:\n{call}\nwhere the arguments are a JSON object matching the \
                     function's parameters.{how_many}"
                ));
            }
            ToolChoice::Named(name) => {
                let named = format!(
                    r#"{{"tool_calls": [{{"name": {}, "arguments": {{<arguments>}}}}]}}"#,
                    Value::String(name.clone())
                );
                out.push_str(&format!(
                    "\nYou must call the function {name} now: reply with only this JSON and \
                     nothing else:\n{named}\nwhere the arguments are a JSON object matching \
                     its parameters."
                ));
            }
            ToolChoice::None => {}
        }
        out.push_str(
            "\nThe results of function calls come back as Tool messages of the form \
             {\"tool_call_id\": …, \"name\": …, \"content\": …}.",
        );
        out
    }

    /// The JSON Schema of a tool-call reply: `{"tool_calls": [call, …]}` with each call
    /// `{"name": <const>, "arguments": <the function's parameters>}` (anyOf over the callable
    /// functions, properties in that order, no other properties), at least one call and at most
    /// [`Tools::max_calls`]. Local `$ref`s of a function's parameters (`#/…`, `#`) are rewritten
    /// to point into its place in this schema, so `$defs` keep working.
    pub fn reply_schema(&self) -> Value {
        let calls: Vec<Value> = self
            .callable()
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let mut arguments = f.parameters.clone();
                let base = format!("#/properties/tool_calls/items/anyOf/{k}/properties/arguments");
                rebase_refs(&mut arguments, &base);
                // Also reached through Lark's `%json` (auto), which does not pass through the
                // schema compile that bounds it.
                bitnet_constraint::bound_for_generation(&mut arguments);
                let mut properties = Map::new();
                properties.insert("name".into(), json!({ "const": f.name }));
                properties.insert("arguments".into(), arguments);
                let mut call = Map::new();
                call.insert("type".into(), json!("object"));
                call.insert("properties".into(), Value::Object(properties));
                call.insert("required".into(), json!(["name", "arguments"]));
                call.insert("additionalProperties".into(), json!(false));
                Value::Object(call)
            })
            .collect();
        let mut list = Map::new();
        list.insert("type".into(), json!("array"));
        list.insert("items".into(), json!({ "anyOf": calls }));
        list.insert("minItems".into(), json!(1));
        if let Some(max) = self.max_calls() {
            list.insert("maxItems".into(), json!(max));
        }
        let mut properties = Map::new();
        properties.insert("tool_calls".into(), Value::Object(list));
        let mut root = Map::new();
        root.insert("type".into(), json!("object"));
        root.insert("properties".into(), Value::Object(properties));
        root.insert("required".into(), json!(["tool_calls"]));
        root.insert("additionalProperties".into(), json!(false));
        Value::Object(root)
    }

    /// The llguidance Lark grammar of a `tool_choice: "auto"` reply: optional JSON whitespace,
    /// then either nothing, plain text whose first character is not `{`, or the tool-call JSON
    /// of [`Tools::reply_schema`] (laid out like every constrained JSON: `", "` and `": "`).
    /// With `answer` (the schema of a `response_format`), the reply that is not a tool call is
    /// that JSON instead of text.
    pub fn auto_lark(&self, answer: Option<&Value>) -> String {
        let with_layout = |mut schema: Value| {
            if let Value::Object(root) = &mut schema {
                let layout: Value = serde_json::from_str(JSON_LAYOUT).unwrap_or(Value::Null);
                root.insert("x-guidance".into(), layout);
            }
            serde_json::to_string(&schema).unwrap_or_default()
        };
        let calls = with_layout(self.reply_schema());
        match answer {
            None => format!(
                "start: WS? (TEXT | tool_calls)?\n\
                 WS: /[ \\t\\r\\n]+/\n\
                 TEXT: /[^{{ \\t\\r\\n](.|\\n)*/\n\
                 tool_calls: %json {calls}\n"
            ),
            Some(answer) => format!(
                "start: WS? (answer | tool_calls)\n\
                 WS: /[ \\t\\r\\n]+/\n\
                 answer: %json {}\n\
                 tool_calls: %json {calls}\n",
                with_layout(answer.clone())
            ),
        }
    }

    /// What the reply is constrained to: nothing for `none`; the tool-call JSON
    /// ([`Tools::reply_schema`]) for `required` and a named function; text or the tool-call
    /// JSON ([`Tools::auto_lark`]) for `auto`.
    /// `answer`: the request's `response_format` grammar (JSON), which an `auto` reply that is
    /// not a tool call must follow.
    pub fn grammar(&self, answer: Option<&Grammar>) -> Option<Grammar> {
        match self.choice {
            ToolChoice::None => None,
            ToolChoice::Required | ToolChoice::Named(_) => {
                Some(Grammar::JsonSchema(self.reply_schema()))
            }
            ToolChoice::Auto => {
                let answer = match answer {
                    Some(Grammar::JsonSchema(schema)) => {
                        let mut schema = schema.clone();
                        bitnet_constraint::bound_for_generation(&mut schema);
                        Some(schema)
                    }
                    Some(_) => Some(json!({"type": "object"})),
                    None => None,
                };
                Some(Grammar::Lark(self.auto_lark(answer.as_ref())))
            }
        }
    }
}

/// One entry of `tools`.
fn parse_tool(i: usize, item: &Value) -> Result<Function, ApiError> {
    let base = format!("tools[{i}]");
    let Some(tool) = item.as_object() else {
        return Err(invalid(
            &base,
            format!(
                "`{base}` must be {{\"type\": \"function\", \"function\": {{\"name\": …, \
                 \"parameters\": {{…}}}}}}, got {}",
                type_name(item)
            ),
        ));
    };
    match tool.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "function" => {}
        Some(other) => {
            return Err(invalid(
                &format!("{base}.type"),
                format!(
                    "`{base}.type` is {other}; only \"function\" tools are supported by this \
                     server"
                ),
            ));
        }
    }
    let param = format!("{base}.function");
    let Some(function) = tool.get("function").and_then(Value::as_object) else {
        return Err(invalid(
            &param,
            format!(
                "`{param}` must be an object {{\"name\": …, \"description\": …, \
                 \"parameters\": {{…}}}}"
            ),
        ));
    };
    let name_param = format!("{param}.name");
    let name = match function.get("name") {
        Some(Value::String(name)) if valid_name(name) => name.clone(),
        Some(Value::String(name)) => {
            return Err(invalid(
                &name_param,
                format!(
                    "`{name_param}` is {name:?}; a function name is 1 to {MAX_NAME_LEN} \
                     characters of a-z, A-Z, 0-9, `_` and `-`"
                ),
            ));
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                &name_param,
                format!("`{name_param}` is missing: every function needs a name"),
            ));
        }
        Some(other) => {
            return Err(invalid(
                &name_param,
                format!("`{name_param}` must be a string, got {}", type_name(other)),
            ));
        }
    };
    let description =
        optional_string(&format!("{param}.description"), function.get("description"))?;
    let strict_param = format!("{param}.strict");
    if let Some(strict) = function.get("strict")
        && !matches!(strict, Value::Null | Value::Bool(_))
    {
        return Err(invalid(
            &strict_param,
            format!(
                "`{strict_param}` must be a boolean, got {}",
                type_name(strict)
            ),
        ));
    }
    let parameters = parse_parameters(&format!("{param}.parameters"), function.get("parameters"))?;
    Ok(Function {
        name,
        description,
        parameters,
    })
}

/// A function's `parameters`: absent or null is a function without arguments (OpenAI's
/// documented meaning, `{"type": "object", "properties": {}}`); otherwise a JSON Schema object
/// whose `type`, when given, is `"object"` (and is added when left out, so the arguments are
/// always an object).
fn parse_parameters(param: &str, v: Option<&Value>) -> Result<Value, ApiError> {
    if let Some(schema) = v {
        // What the engine would get wrong inside `%json` (tool_choice auto) is refused here.
        bitnet_constraint::check_supported(schema).map_err(|e| {
            invalid(
                param,
                format!("the parameters at `{param}` cannot be enforced: {e}"),
            )
        })?;
    }
    let schema = match v {
        None | Some(Value::Null) => return Ok(json!({"type": "object", "properties": {}})),
        Some(Value::Object(schema)) => schema,
        Some(other) => {
            return Err(invalid(
                param,
                format!(
                    "`{param}` must be a JSON Schema object like {{\"type\": \"object\", \
                     \"properties\": {{\"city\": {{\"type\": \"string\"}}}}}}, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    match schema.get("type") {
        Some(Value::String(t)) if t == "object" => Ok(Value::Object(schema.clone())),
        None => {
            let mut with_type = Map::new();
            with_type.insert("type".into(), json!("object"));
            for (k, v) in schema {
                with_type.insert(k.clone(), v.clone());
            }
            Ok(Value::Object(with_type))
        }
        Some(other) => Err(invalid(
            param,
            format!(
                "`{param}` has type {other}, but a function's arguments are a JSON object: use \
                 {{\"type\": \"object\", \"properties\": {{…}}}} and put the value in a property"
            ),
        )),
    }
}

/// `tool_choice`: "none", "auto", "required" or {"type": "function", "function": {"name": …}}.
fn parse_choice(v: &Value) -> Result<ToolChoice, ApiError> {
    const EXPECTED: &str = "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \
                            \"function\": {\"name\": \"…\"}}";
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(
                "tool_choice",
                format!("`tool_choice` is {other:?}; {EXPECTED}"),
            )),
        },
        Value::Object(o) => {
            match o.get("type") {
                Some(Value::String(t)) if t == "function" => {}
                other => {
                    let got = other.map_or("missing".to_string(), Value::to_string);
                    return Err(invalid(
                        "tool_choice.type",
                        format!(
                            "`tool_choice.type` is {got}; only \"function\" is supported \
                             ({EXPECTED})"
                        ),
                    ));
                }
            }
            match o.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(name)) => Ok(ToolChoice::Named(name.clone())),
                _ => Err(invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice.function.name` must be a function name; {EXPECTED}"),
                )),
            }
        }
        other => Err(invalid(
            "tool_choice",
            format!("`tool_choice` is {}; {EXPECTED}", type_name(other)),
        )),
    }
}

/// Keywords whose values are data, not schemas: never rewritten.
const DATA_KEYWORDS: &[&str] = &["const", "enum", "default", "examples"];
/// Keywords whose values map names to schemas (any name, even `default` or `$ref`).
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Rewrite the local `$ref`s of `schema` (`#` and `#/…`, JSON pointers from its root) to point
/// to the same places once the schema sits at the JSON pointer `base` of a larger document.
fn rebase_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "$ref" {
                    if let Value::String(r) = value {
                        if r == "#" {
                            *r = base.to_string();
                        } else if let Some(rest) = r.strip_prefix("#/") {
                            *r = format!("{base}/{rest}");
                        }
                    }
                } else if DATA_KEYWORDS.contains(&key.as_str()) {
                    continue;
                } else if SCHEMA_MAPS.contains(&key.as_str()) {
                    if let Value::Object(schemas) = value {
                        for s in schemas.values_mut() {
                            rebase_refs(s, base);
                        }
                    }
                } else {
                    rebase_refs(value, base);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rebase_refs(item, base);
            }
        }
        _ => {}
    }
}

// ----- JSON layout -----

/// serde_json's compact output with the constraint's separators `", "` and `": "`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `value` as JSON laid out the way the constraint writes it (what the model is taught).
fn spaced_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    // Writing a `Value` to a Vec cannot fail; the output is UTF-8 by construction.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// JSON's insignificant whitespace.
fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// `json` without whitespace outside strings: the compact text of the same value, keeping the
/// text of numbers and escapes as written.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if is_json_ws(c) {
            continue;
        }
        out.push(c);
    }
    out
}

// ----- replies -----

/// One tool call of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_<16 hex digits>`, fresh per call.
    pub id: String,
    pub name: String,
    /// The arguments object as compact JSON text (the model's text without whitespace outside
    /// strings).
    pub arguments: String,
}

/// A fresh tool-call id.
pub fn call_id() -> String {
    format!("call_{:016x}", bitnet_rng::random_u64())
}

/// What an assistant reply under tools is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Content(String),
    ToolCalls(Vec<ToolCall>),
}

/// Read a whole reply: a text that starts (after JSON whitespace) with `{` and is exactly the
/// tool-call JSON (`{"tool_calls": [{"name": …, "arguments": {…}}, …]}`, at least one call, no
/// other keys) is tool calls; anything else, a cut-off tool call included, is content (the text
/// unchanged).
pub fn parse_reply(text: &str) -> Reply {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper<'a> {
        #[serde(borrow)]
        tool_calls: Vec<Call<'a>>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Call<'a> {
        name: String,
        #[serde(borrow)]
        arguments: &'a RawValue,
    }
    let content = || Reply::Content(text.to_string());
    if !text.trim_start_matches(is_json_ws).starts_with('{') {
        return content();
    }
    let Ok(wrapper) = serde_json::from_str::<Wrapper>(text) else {
        return content();
    };
    if wrapper.tool_calls.is_empty()
        || !wrapper
            .tool_calls
            .iter()
            .all(|c| c.arguments.get().starts_with('{'))
    {
        return content();
    }
    Reply::ToolCalls(
        wrapper
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: call_id(),
                name: c.name,
                arguments: minify(c.arguments.get()),
            })
            .collect(),
    )
}

/// One increment of a streamed reply, in the order OpenAI streams them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamDelta {
    /// Text of a plain reply.
    Content(String),
    /// A new tool call, sent once its name is complete.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// The next piece of call `index`'s arguments (compact JSON text; the pieces of a call
    /// concatenate to [`ToolCall::arguments`]).
    Arguments { index: usize, fragment: String },
}

/// Where the reader of the tool-call JSON is; each step skips JSON whitespace first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `{` of the wrapper, or plain text.
    Start,
    /// `"tool_calls"`.
    WrapperKey,
    WrapperColon,
    /// `[` of the call list.
    ListOpen,
    /// `{` of a call, or `]` when the list is still empty.
    CallOrEnd,
    /// `{` of the next call.
    Call,
    /// A key of a call (`"name"` or `"arguments"`).
    CallKey,
    CallColon,
    /// The value of the key just read.
    CallValue,
    /// `,` or `}` after a value in a call.
    CallNext,
    /// `,` or `]` after a call.
    ListNext,
    /// `}` closing the wrapper.
    WrapperClose,
    /// Only whitespace may follow.
    End,
}

/// A string being read (raw, with quotes and escapes, decoded when it closes).
#[derive(Debug)]
struct StringState {
    raw: String,
    escaped: bool,
}

impl StringState {
    /// A string whose opening quote was just read.
    fn open() -> Self {
        Self {
            raw: String::from('"'),
            escaped: false,
        }
    }

    /// Take `c`; true when it closed the string.
    fn push(&mut self, c: char) -> bool {
        self.raw.push(c);
        if self.escaped {
            self.escaped = false;
        } else if c == '\\' {
            self.escaped = true;
        } else if c == '"' && self.raw.len() > 1 {
            return true;
        }
        false
    }
}

/// What a streamed reply has turned out to be so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Leading whitespace only.
    Undecided,
    /// Plain text: everything is content.
    Text,
    /// Reading the tool-call JSON.
    Json,
    /// The text left the tool-call shape after a call was already sent: the rest is dropped.
    Dead,
}

/// The arguments value being read (any depth: serde_json reads a raw value without its
/// recursion limit, and so does this).
#[derive(Debug, Default)]
struct ArgsState {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// Turns a streamed reply into [`StreamDelta`]s. Plain text is content as soon as its first
/// non-whitespace character is not `{`; the tool-call JSON gives a `CallStart` per call once
/// its name is complete and `Arguments` fragments as the arguments arrive. Any input is taken
/// (never a panic); the memory held is at most the text itself. For a complete reply the
/// deltas say exactly what [`parse_reply`] says of the whole text (content concatenated, same
/// calls, arguments concatenated), for every way of cutting it into pieces; a tool call cut off
/// (e.g. by `max_tokens`) stays a partial call, as OpenAI streams it, where `parse_reply` calls
/// the text content.
#[derive(Debug)]
pub struct ToolStream {
    mode: Mode,
    expect: Expect,
    /// The text so far while no call has been sent: it becomes content if the JSON turns out
    /// not to be a tool call.
    held: String,
    /// A key or the name being read.
    string: Option<StringState>,
    /// The key of the value expected in a call.
    key: Option<&'static str>,
    /// Calls started (sent) so far.
    sent: usize,
    /// The current call: its name once read, whether arguments were read, arguments read before
    /// the name (sent with the `CallStart`).
    name: Option<String>,
    has_args: bool,
    early_args: String,
    args: Option<ArgsState>,
}

impl Default for ToolStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolStream {
    pub fn new() -> Self {
        Self {
            mode: Mode::Undecided,
            expect: Expect::Start,
            held: String::new(),
            string: None,
            key: None,
            sent: 0,
            name: None,
            has_args: false,
            early_args: String::new(),
            args: None,
        }
    }

    /// How many tool calls have been started (a reply with calls finishes with
    /// `finish_reason: "tool_calls"` when it ended normally).
    pub fn calls_started(&self) -> usize {
        self.sent
    }

    /// Take the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> Vec<StreamDelta> {
        let mut out = Vec::new();
        let mut fragment = String::new();
        for (at, c) in piece.char_indices() {
            match self.mode {
                Mode::Text => {
                    out.push(StreamDelta::Content(piece[at..].to_string()));
                    break;
                }
                Mode::Dead => break,
                Mode::Undecided => {
                    self.held.push(c);
                    if is_json_ws(c) {
                        continue;
                    }
                    if c == '{' {
                        self.mode = Mode::Json;
                        self.expect = Expect::WrapperKey;
                    } else {
                        self.mode = Mode::Text;
                        out.push(StreamDelta::Content(std::mem::take(&mut self.held)));
                        if at + c.len_utf8() < piece.len() {
                            out.push(StreamDelta::Content(piece[at + c.len_utf8()..].to_string()));
                        }
                        break;
                    }
                }
                Mode::Json => {
                    if self.sent == 0 {
                        self.held.push(c);
                    }
                    if !self.step(c, &mut fragment, &mut out) {
                        self.flush_fragment(&mut fragment, &mut out);
                        if self.sent == 0 {
                            // Not a tool call after all: all of it is content.
                            self.mode = Mode::Text;
                            out.push(StreamDelta::Content(std::mem::take(&mut self.held)));
                            let rest = &piece[at + c.len_utf8()..];
                            if !rest.is_empty() {
                                out.push(StreamDelta::Content(rest.to_string()));
                            }
                        } else {
                            self.mode = Mode::Dead;
                        }
                        break;
                    }
                }
            }
        }
        self.flush_fragment(&mut fragment, &mut out);
        out
    }

    /// The reply has ended: text held back (leading whitespace, or JSON that never became a
    /// tool call) comes out as content.
    pub fn finish(&mut self) -> Vec<StreamDelta> {
        let mut out = Vec::new();
        let pending = matches!(self.mode, Mode::Undecided | Mode::Json) && self.sent == 0;
        if pending && !self.held.is_empty() {
            out.push(StreamDelta::Content(std::mem::take(&mut self.held)));
        }
        self.mode = Mode::Dead;
        out
    }

    /// Arguments text read in this piece goes out as one fragment (or waits for the name).
    fn flush_fragment(&mut self, fragment: &mut String, out: &mut Vec<StreamDelta>) {
        if fragment.is_empty() {
            return;
        }
        if self.name.is_some() {
            out.push(StreamDelta::Arguments {
                index: self.sent - 1,
                fragment: std::mem::take(fragment),
            });
        } else {
            self.early_args.push_str(fragment);
            fragment.clear();
        }
    }

    /// Advance the tool-call reader by `c`; false when the text is not a tool call.
    fn step(&mut self, c: char, fragment: &mut String, out: &mut Vec<StreamDelta>) -> bool {
        if self.args.is_some() {
            return self.step_args(c, fragment, out);
        }
        if let Some(s) = &mut self.string {
            if !s.push(c) {
                return true;
            }
            let raw = std::mem::take(&mut s.raw);
            self.string = None;
            let Ok(text) = serde_json::from_str::<String>(&raw) else {
                return false;
            };
            return self.string_done(text, fragment, out);
        }
        if is_json_ws(c) {
            return true;
        }
        let next = match (self.expect, c) {
            (Expect::WrapperKey | Expect::CallKey, '"') => {
                self.string = Some(StringState::open());
                return true;
            }
            (Expect::CallValue, '"') if self.key == Some("name") => {
                self.string = Some(StringState::open());
                return true;
            }
            (Expect::WrapperColon, ':') => Expect::ListOpen,
            (Expect::ListOpen, '[') => Expect::CallOrEnd,
            (Expect::CallOrEnd | Expect::Call, '{') => {
                self.name = None;
                self.has_args = false;
                self.early_args.clear();
                Expect::CallKey
            }
            (Expect::CallColon, ':') => Expect::CallValue,
            (Expect::CallValue, '{') if self.key == Some("arguments") => {
                self.has_args = true;
                self.args = Some(ArgsState {
                    depth: 1,
                    ..ArgsState::default()
                });
                fragment.push('{');
                return true;
            }
            (Expect::CallNext, ',') => Expect::CallKey,
            (Expect::CallNext, '}') => {
                if self.name.is_none() || !self.has_args {
                    return false;
                }
                Expect::ListNext
            }
            (Expect::ListNext, ',') => Expect::Call,
            (Expect::ListNext | Expect::CallOrEnd, ']') => Expect::WrapperClose,
            (Expect::WrapperClose, '}') => Expect::End,
            _ => return false,
        };
        self.expect = next;
        true
    }

    /// A key or the name has been read.
    fn string_done(
        &mut self,
        text: String,
        fragment: &mut String,
        out: &mut Vec<StreamDelta>,
    ) -> bool {
        match self.expect {
            Expect::WrapperKey if text == "tool_calls" => {
                self.expect = Expect::WrapperColon;
                true
            }
            Expect::CallKey => {
                let key = match text.as_str() {
                    "name" if self.name.is_none() => "name",
                    "arguments" if !self.has_args => "arguments",
                    _ => return false,
                };
                self.key = Some(key);
                self.expect = Expect::CallColon;
                true
            }
            Expect::CallValue => {
                // The name: the call starts now, with any arguments read before it.
                self.flush_fragment(fragment, out);
                let index = self.sent;
                self.sent += 1;
                self.held.clear();
                out.push(StreamDelta::CallStart {
                    index,
                    id: call_id(),
                    name: text.clone(),
                });
                self.name = Some(text);
                if !self.early_args.is_empty() {
                    out.push(StreamDelta::Arguments {
                        index,
                        fragment: std::mem::take(&mut self.early_args),
                    });
                }
                self.expect = Expect::CallNext;
                true
            }
            _ => false,
        }
    }

    /// Advance through the arguments value by `c`.
    fn step_args(&mut self, c: char, fragment: &mut String, out: &mut Vec<StreamDelta>) -> bool {
        let Some(args) = &mut self.args else {
            return false;
        };
        if args.in_string {
            fragment.push(c);
            if args.escaped {
                args.escaped = false;
            } else if c == '\\' {
                args.escaped = true;
            } else if c == '"' {
                args.in_string = false;
            }
            return true;
        }
        if is_json_ws(c) {
            return true;
        }
        fragment.push(c);
        match c {
            '"' => args.in_string = true,
            '{' | '[' => args.depth += 1,
            '}' | ']' => {
                args.depth -= 1;
                if args.depth == 0 {
                    // The arguments are complete: their last fragment belongs to this call.
                    self.args = None;
                    self.expect = Expect::CallNext;
                    self.flush_fragment(fragment, out);
                }
            }
            _ => {}
        }
        true
    }
}

// ----- response shapes -----

/// One entry of a message's `tool_calls`: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`.
#[derive(Debug, Serialize)]
pub struct MessageToolCall<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: MessageFunction<'a>,
}

#[derive(Debug, Serialize)]
pub struct MessageFunction<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

impl ToolCall {
    /// This call as an entry of the response message's `tool_calls`.
    pub fn message(&self) -> MessageToolCall<'_> {
        MessageToolCall {
            id: &self.id,
            kind: "function",
            function: MessageFunction {
                name: &self.name,
                arguments: &self.arguments,
            },
        }
    }
}

/// One entry of a stream delta's `tool_calls`: `{"index", "id"?, "type"?, "function": {"name"?,
/// "arguments"}}` (id, type and name on a call's first delta only, as OpenAI streams them).
#[derive(Debug, Serialize)]
pub struct DeltaToolCall<'a> {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: DeltaFunction<'a>,
}

#[derive(Debug, Serialize)]
pub struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

impl StreamDelta {
    /// This delta as an entry of a chunk's `delta.tool_calls`; `None` for content.
    pub fn tool_call(&self) -> Option<DeltaToolCall<'_>> {
        match self {
            StreamDelta::Content(_) => None,
            StreamDelta::CallStart { index, id, name } => Some(DeltaToolCall {
                index: *index,
                id: Some(id),
                kind: Some("function"),
                function: DeltaFunction {
                    name: Some(name),
                    arguments: "",
                },
            }),
            StreamDelta::Arguments { index, fragment } => Some(DeltaToolCall {
                index: *index,
                id: None,
                kind: None,
                function: DeltaFunction {
                    name: None,
                    arguments: fragment,
                },
            }),
        }
    }
}

// ----- conversation history -----

/// Renders the tool parts of earlier turns in the reply format, so a follow-up looks like what
/// the model was taught: an assistant turn that made calls is the tool-call JSON, a `tool`
/// message a JSON object `{"tool_call_id", "name", "content"}`. Remembers the calls of earlier
/// assistant turns to name the function a `tool` message answers. Use one per request, over
/// the messages in order.
#[derive(Debug, Default)]
pub struct History {
    /// Tool-call id → function name, from the assistant turns so far.
    names: HashMap<String, String>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of assistant message `index`: `content` (its text, already extracted) when it
    /// made no tool calls, else the tool-call JSON of its `tool_calls` (the content is then
    /// left out: a reply is either text or calls). Each call must be
    /// `{"id"?: string, "type"?: "function", "function": {"name": string, "arguments": string}}`
    /// with `arguments` JSON text (empty means `{}`); a 400 names the part that is not.
    pub fn assistant_text(
        &mut self,
        index: usize,
        content: &str,
        tool_calls: Option<&Value>,
    ) -> Result<String, ApiError> {
        let base = format!("messages[{index}].tool_calls");
        let calls = match tool_calls {
            None | Some(Value::Null) => return Ok(content.to_string()),
            Some(Value::Array(calls)) if calls.is_empty() => return Ok(content.to_string()),
            Some(Value::Array(calls)) => calls,
            Some(other) => {
                return Err(invalid(
                    &base,
                    format!(
                        "`{base}` must be an array of {{\"id\": …, \"type\": \"function\", \
                         \"function\": {{\"name\": …, \"arguments\": \"…\"}}}}, got {}",
                        type_name(other)
                    ),
                ));
            }
        };
        let mut rendered = Vec::with_capacity(calls.len());
        for (j, call) in calls.iter().enumerate() {
            let param = format!("{base}[{j}]");
            let Some(call) = call.as_object() else {
                return Err(invalid(
                    &param,
                    format!(
                        "`{param}` must be {{\"id\": …, \"type\": \"function\", \"function\": \
                         {{\"name\": …, \"arguments\": \"…\"}}}}, got {}",
                        type_name(call)
                    ),
                ));
            };
            match call.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t == "function" => {}
                Some(other) => {
                    return Err(invalid(
                        &format!("{param}.type"),
                        format!("`{param}.type` is {other}; only \"function\" calls are supported"),
                    ));
                }
            }
            let id = optional_string(&format!("{param}.id"), call.get("id"))?;
            let fparam = format!("{param}.function");
            let Some(function) = call.get("function").and_then(Value::as_object) else {
                return Err(invalid(
                    &fparam,
                    format!("`{fparam}` must be an object {{\"name\": …, \"arguments\": \"…\"}}"),
                ));
            };
            let name_param = format!("{fparam}.name");
            let Some(name) = optional_string(&name_param, function.get("name"))? else {
                return Err(invalid(
                    &name_param,
                    format!("`{name_param}` is missing: every tool call names its function"),
                ));
            };
            let args_param = format!("{fparam}.arguments");
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) if text.trim_matches(is_json_ws).is_empty() => json!({}),
                Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|e| {
                    invalid(
                        &args_param,
                        format!(
                            "`{args_param}` is not JSON ({e}); send the arguments object as \
                             JSON text, e.g. \"{{\\\"city\\\": \\\"Paris\\\"}}\""
                        ),
                    )
                })?,
                Some(other) => {
                    return Err(invalid(
                        &args_param,
                        format!(
                            "`{args_param}` must be a string (the arguments object as JSON \
                             text, e.g. \"{{\\\"city\\\": \\\"Paris\\\"}}\"), got {}",
                            type_name(other)
                        ),
                    ));
                }
            };
            if let Some(id) = id {
                self.names.insert(id, name.clone());
            }
            let mut entry = Map::new();
            entry.insert("name".into(), Value::String(name));
            entry.insert("arguments".into(), arguments);
            rendered.push(Value::Object(entry));
        }
        let mut wrapper = Map::new();
        wrapper.insert("tool_calls".into(), Value::Array(rendered));
        Ok(spaced_json(&Value::Object(wrapper)))
    }

    /// The text of `tool` message `index`: `{"tool_call_id": …, "name": …, "content": …}`, the
    /// name being the function of the earlier assistant call with that id (left out when no
    /// call had it, as is the id when the message has none). A content that is a JSON object or
    /// array is embedded as JSON, anything else as a string.
    pub fn tool_result_text(
        &self,
        index: usize,
        tool_call_id: Option<&Value>,
        content: &str,
    ) -> Result<String, ApiError> {
        let id = optional_string(&format!("messages[{index}].tool_call_id"), tool_call_id)?;
        let mut entry = Map::new();
        if let Some(id) = id {
            if let Some(name) = self.names.get(&id) {
                entry.insert("tool_call_id".into(), Value::String(id));
                entry.insert("name".into(), Value::String(name.clone()));
            } else {
                entry.insert("tool_call_id".into(), Value::String(id));
            }
        }
        let trimmed = content.trim_matches(is_json_ws);
        let value = match serde_json::from_str::<Value>(trimmed) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
            _ => Value::String(content.to_string()),
        };
        entry.insert("content".into(), value);
        Ok(spaced_json(&Value::Object(entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_rng::SplitMix64;
    use bitnet_tokenizer::ChatMessage;

    fn tool(name: &str, parameters: Value) -> Value {
        json!({"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}})
    }

    fn weather() -> Value {
        tool(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
    }

    fn parse_err(tools: Value, choice: Option<Value>) -> ApiError {
        Tools::parse(Some(&tools), choice.as_ref(), None, None).unwrap_err()
    }

    #[test]
    fn parse_accepts_openai_shapes() {
        let tools = json!([weather(), {"type": "function", "function": {"name": "now"}}]);
        let t = Tools::parse(Some(&tools), None, None, None)
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, ToolChoice::Auto);
        assert!(t.parallel);
        assert_eq!(t.functions.len(), 2);
        assert_eq!(t.functions[0].name, "get_weather");
        assert_eq!(t.functions[0].description.as_deref(), Some("d"));
        // No parameters: a function without arguments.
        assert_eq!(
            t.functions[1].parameters,
            json!({"type": "object", "properties": {}})
        );
        for (choice, want) in [
            (json!("none"), ToolChoice::None),
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "now"}}),
                ToolChoice::Named("now".into()),
            ),
        ] {
            let t = Tools::parse(Some(&tools), Some(&choice), Some(false), None)
                .unwrap()
                .unwrap();
            assert_eq!(t.choice, want);
            assert!(!t.parallel);
        }
        // A schema without `type` is given `"type": "object"` (first, the rest kept in order).
        let t = Tools::parse(
            Some(&json!([tool(
                "f",
                json!({"properties": {"a": {"type": "integer"}}})
            )])),
            None,
            None,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            t.functions[0].parameters,
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        );
        // No tools at all: plain chat.
        assert_eq!(Tools::parse(None, None, Some(true), None).unwrap(), None);
        assert_eq!(
            Tools::parse(Some(&json!([])), None, None, None).unwrap(),
            None
        );
        assert_eq!(
            Tools::parse(Some(&Value::Null), None, None, Some(&Value::Null)).unwrap(),
            None
        );
    }

    #[test]
    fn parse_errors_name_the_parameter() {
        let cases: Vec<(Value, Option<Value>, &str, &str)> = vec![
            (json!({"a": 1}), None, "tools", "must be an array"),
            (json!([5]), None, "tools[0]", "got a number"),
            (
                json!([weather(), {"type": "retrieval"}]),
                None,
                "tools[1].type",
                "only \"function\"",
            ),
            (
                json!([{"type": "function"}]),
                None,
                "tools[0].function",
                "must be an object",
            ),
            (
                json!([{"type": "function", "function": {}}]),
                None,
                "tools[0].function.name",
                "missing",
            ),
            (
                json!([tool("get weather", json!({"type": "object"}))]),
                None,
                "tools[0].function.name",
                "1 to 64 characters",
            ),
            (
                json!([tool(&"x".repeat(65), json!({"type": "object"}))]),
                None,
                "tools[0].function.name",
                "1 to 64 characters",
            ),
            (
                json!([tool("", json!({"type": "object"}))]),
                None,
                "tools[0].function.name",
                "1 to 64",
            ),
            (
                json!([{"type": "function", "function": {"name": 7}}]),
                None,
                "tools[0].function.name",
                "must be a string",
            ),
            (
                json!([weather(), weather(), tool("x", json!({"type": "object"}))]),
                None,
                "tools[1].function.name",
                "tools[0] too",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "description": 3}}]),
                None,
                "tools[0].function.description",
                "must be a string",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
                None,
                "tools[0].function.strict",
                "boolean",
            ),
            (
                json!([weather(), weather(), tool("f", json!("string"))]),
                None,
                "tools[1].function.name",
                "unique",
            ),
            (
                json!([weather(), tool("f", json!([1]))]),
                None,
                "tools[1].function.parameters",
                "got an array",
            ),
            (
                json!([weather(), tool("f", json!({"type": "string"}))]),
                None,
                "tools[1].function.parameters",
                "put the value in a property",
            ),
            (
                json!([weather(), tool("f", json!({"type": ["object", "null"]}))]),
                None,
                "tools[1].function.parameters",
                "a JSON object",
            ),
            (
                json!([weather()]),
                Some(json!("sometimes")),
                "tool_choice",
                "\"sometimes\"",
            ),
            (
                json!([weather()]),
                Some(json!(1)),
                "tool_choice",
                "a number",
            ),
            (
                json!([weather()]),
                Some(json!({"type": "allowed_tools"})),
                "tool_choice.type",
                "only \"function\"",
            ),
            (
                json!([weather()]),
                Some(json!({"type": "function", "function": {}})),
                "tool_choice.function.name",
                "must be a function name",
            ),
            (
                json!([weather()]),
                Some(json!({"type": "function", "function": {"name": "get_time"}})),
                "tool_choice.function.name",
                "not in `tools` (they are: get_weather)",
            ),
            (json!([]), Some(json!("auto")), "tool_choice", "no `tools`"),
            (
                Value::Null,
                Some(json!("required")),
                "tool_choice",
                "no `tools`",
            ),
        ];
        for (tools, choice, param, text) in cases {
            let e = parse_err(tools.clone(), choice.clone());
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(
                e.param.as_deref(),
                Some(param),
                "{tools} {choice:?}: {}",
                e.message
            );
            assert!(
                e.message.contains(text),
                "{tools} {choice:?}: {}",
                e.message
            );
        }
        let many: Vec<Value> = (0..=MAX_TOOLS)
            .map(|i| tool(&format!("f{i}"), json!({})))
            .collect();
        let e = parse_err(Value::Array(many), None);
        assert_eq!(e.param.as_deref(), Some("tools"));
        assert!(e.message.contains("at most 128"), "{}", e.message);
        let at_limit: Vec<Value> = (0..MAX_TOOLS)
            .map(|i| tool(&format!("f{i}"), json!({})))
            .collect();
        assert!(Tools::parse(Some(&Value::Array(at_limit)), None, None, None).is_ok());
        let e = Tools::parse(None, None, None, Some(&json!([{"name": "f"}]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("functions"));
        assert!(e.message.contains("`tools: ["), "{}", e.message);
    }

    fn tools_with(choice: Value, parallel: bool) -> Tools {
        let tools = json!([
            weather(),
            tool(
                "lookup",
                json!({
                    "type": "object",
                    "properties": {"item": {"$ref": "#/$defs/Item"}, "again": {"$ref": "#"}},
                    "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "integer"}}}},
                    "default": {"$ref": "#/not/a/schema"}
                }),
            )
        ]);
        Tools::parse(Some(&tools), Some(&choice), Some(parallel), None)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn reply_schema_wraps_the_functions() {
        let s = tools_with(json!("required"), false).reply_schema();
        let list = &s["properties"]["tool_calls"];
        assert_eq!(list["minItems"], 1);
        assert_eq!(list["maxItems"], 1);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["tool_calls"]));
        let calls = list["items"]["anyOf"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[0]["properties"]["name"],
            json!({"const": "get_weather"})
        );
        assert_eq!(calls[0]["additionalProperties"], false);
        assert_eq!(calls[0]["required"], json!(["name", "arguments"]));
        // Property order: name, then arguments (the order the model writes them).
        let keys: Vec<&String> = calls[1]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "arguments"]);
        // Local references point into the function's place; data values are untouched.
        let args = &calls[1]["properties"]["arguments"];
        let base = "#/properties/tool_calls/items/anyOf/1/properties/arguments";
        assert_eq!(
            args["properties"]["item"]["$ref"],
            format!("{base}/$defs/Item")
        );
        assert_eq!(args["properties"]["again"]["$ref"], base);
        assert_eq!(args["default"]["$ref"], "#/not/a/schema");
        let pointer = format!("{}/$defs/Item", &base[1..]);
        assert_eq!(
            s.pointer(&pointer).unwrap()["properties"]["id"]["type"],
            "integer"
        );

        // Parallel calls: no maxItems; a named function: only it, once.
        let s = tools_with(json!("required"), true).reply_schema();
        assert!(s["properties"]["tool_calls"].get("maxItems").is_none());
        let s = tools_with(
            json!({"type": "function", "function": {"name": "lookup"}}),
            true,
        )
        .reply_schema();
        let calls = s["properties"]["tool_calls"]["items"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["properties"]["name"]["const"], "lookup");
        assert_eq!(
            calls[0]["properties"]["arguments"]["properties"]["item"]["$ref"],
            "#/properties/tool_calls/items/anyOf/0/properties/arguments/$defs/Item"
        );
        assert_eq!(s["properties"]["tool_calls"]["maxItems"], 1);
    }

    #[test]
    fn auto_lark_embeds_the_schema_with_the_layout() {
        let t = tools_with(json!("auto"), true);
        let lark = t.auto_lark(None);
        let (head, json_text) = lark.split_once("tool_calls: %json ").unwrap();
        assert_eq!(
            head,
            "start: WS? (TEXT | tool_calls)?\nWS: /[ \\t\\r\\n]+/\nTEXT: /[^{ \\t\\r\\n](.|\\n)*/\n"
        );
        let mut schema: Value = serde_json::from_str(json_text.trim_end()).unwrap();
        let layout = schema
            .as_object_mut()
            .unwrap()
            .remove("x-guidance")
            .unwrap();
        assert_eq!(
            layout,
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
        );
        assert_eq!(schema, t.reply_schema());
    }

    #[test]
    fn system_prompt_follows_the_choice() {
        let auto = tools_with(json!("auto"), true).system_prompt();
        assert!(auto.contains(
            r#"{"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}"#
        ), "{auto}");
        assert!(auto.contains("\"lookup\""), "{auto}");
        assert!(
            auto.contains("plain text that does not start with \"{\""),
            "{auto}"
        );
        assert!(auto.contains("several functions"), "{auto}");
        let one = tools_with(json!("auto"), false).system_prompt();
        assert!(one.contains("exactly one call"), "{one}");
        let required = tools_with(json!("required"), false).system_prompt();
        assert!(
            required.contains("You must call a function now"),
            "{required}"
        );
        assert!(!required.contains("plain text"), "{required}");
        let named = tools_with(
            json!({"type": "function", "function": {"name": "lookup"}}),
            true,
        )
        .system_prompt();
        assert!(
            named.contains("You must call the function lookup now"),
            "{named}"
        );
        assert!(
            named.contains(r#"{"tool_calls": [{"name": "lookup", "arguments": {<arguments>}}]}"#),
            "{named}"
        );
        assert!(!named.contains("get_weather"), "{named}");
        assert_eq!(tools_with(json!("none"), true).system_prompt(), "");
        assert!(
            tools_with(json!("none"), true)
                .auto_lark(None)
                .contains("anyOf")
        );
    }

    fn calls(reply: &Reply) -> Vec<(String, String)> {
        match reply {
            Reply::Content(_) => vec![],
            Reply::ToolCalls(c) => c
                .iter()
                .map(|c| (c.name.clone(), c.arguments.clone()))
                .collect(),
        }
    }

    #[test]
    fn parse_reply_reads_the_wrapper() {
        let r = parse_reply(
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}]}"#,
        );
        assert_eq!(
            calls(&r),
            [(
                "get_weather".to_string(),
                r#"{"city":"Paris","days":[1,2]}"#.to_string()
            )]
        );
        let Reply::ToolCalls(c) = &r else {
            unreachable!()
        };
        assert!(
            c[0].id.starts_with("call_") && c[0].id.len() == 21,
            "{}",
            c[0].id
        );
        // Whitespace around and inside, escapes and numbers kept as written, key order free.
        let r = parse_reply(
            " \n{ \"tool_calls\" : [ {\"arguments\":{ \"q\" : \"a b\\\"\\n\\u00e9 }\", \"n\": 1.50e3 }, \"name\":\"s\\u0074\"},{\"name\": \"now\", \"arguments\": {}} ] }\n ",
        );
        assert_eq!(
            calls(&r),
            [
                (
                    "st".to_string(),
                    r#"{"q":"a b\"\n\u00e9 }","n":1.50e3}"#.to_string()
                ),
                ("now".to_string(), "{}".to_string())
            ]
        );
        for content in [
            "",
            "   ",
            "Hello",
            " Hello {\"tool_calls\": []}",
            "{\"tool_calls\": []}",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}}",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}}]} and more",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": []}]}",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}, \"x\": 1}]}",
            "{\"tool_calls\": [{\"name\": \"f\"}]}",
            "{\"tool_calls\": [{\"name\": \"f\", \"name\": \"g\", \"arguments\": {}}]}",
            "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}}], \"tool_calls\": []}",
            "{\"answer\": 42}",
            "{not json",
            "\u{a0}{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}}]}",
        ] {
            assert_eq!(
                parse_reply(content),
                Reply::Content(content.to_string()),
                "{content:?}"
            );
        }
    }

    /// What a stream said: content, and the calls (name, arguments) in index order.
    fn replay(deltas: &[StreamDelta]) -> (String, Vec<(String, String)>) {
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut ids = Vec::new();
        for d in deltas {
            match d {
                StreamDelta::Content(t) => {
                    assert!(calls.is_empty(), "content after a call: {deltas:?}");
                    content.push_str(t);
                }
                StreamDelta::CallStart { index, id, name } => {
                    assert_eq!(*index, calls.len(), "{deltas:?}");
                    assert!(content.is_empty(), "a call after content: {deltas:?}");
                    assert!(!ids.contains(id));
                    ids.push(id.clone());
                    calls.push((name.clone(), String::new()));
                }
                StreamDelta::Arguments { index, fragment } => {
                    assert_eq!(*index + 1, calls.len(), "{deltas:?}");
                    assert!(!fragment.is_empty());
                    calls[*index].1.push_str(fragment);
                }
            }
        }
        (content, calls)
    }

    fn stream(pieces: &[&str]) -> (String, Vec<(String, String)>) {
        let mut s = ToolStream::new();
        let mut deltas = Vec::new();
        for p in pieces {
            deltas.extend(s.push(p));
        }
        deltas.extend(s.finish());
        replay(&deltas)
    }

    fn expected(text: &str) -> (String, Vec<(String, String)>) {
        match parse_reply(text) {
            Reply::Content(c) => (c, vec![]),
            r => (String::new(), calls(&r)),
        }
    }

    /// The char boundaries of `text` (cut points for pieces).
    fn cuts(text: &str) -> Vec<usize> {
        (1..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect()
    }

    fn pieces_at<'a>(text: &'a str, at: &[usize]) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut from = 0;
        for &i in at {
            out.push(&text[from..i]);
            from = i;
        }
        out.push(&text[from..]);
        out
    }

    /// Complete replies: tool calls of many shapes, and text.
    fn shapes() -> Vec<String> {
        let mut out: Vec<String> = [
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}"#,
            r#"{"tool_calls": [{"name": "now", "arguments": {}}]}"#,
            r#"{"tool_calls": [{"name": "a-b_c", "arguments": {"x": {"y": [1, {"z": null}], "w": [[], {}]}, "t": true, "f": -0.5e-3}}, {"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "São Paulo 🌧"}}]}"#,
            r#"{"tool_calls": [{"name": "esc", "arguments": {"s": "quote \" brace } bracket ] back \\ slash \\\" end", "u": "\u00e9\ud83d\ude00\n\t"}}]}"#,
            r#"{"tool_calls": [{"name": "s\u0074", "arguments": {"k\"ey": "{\"not\": \"json\"}"}}]}"#,
            "  \n{\"tool_calls\":[{\"name\":\"f\",\"arguments\":{ \"a\" :\t1 ,\"b\" : [ 2 , 3 ] }}]}  \n",
            r#"{"tool_calls": [{"arguments": {"late": "name"}, "name": "late"}]}"#,
            "Hello, world!",
            "  The answer is {42}.",
            "\n\nnaïve café — 日本語 {\"tool_calls\": []}",
            "",
            "   ",
            "{\"tool_calls\": []}",
            "{\"answer\": 42}",
            "{\"tool_calls\": [{\"arguments\": {}, \"arguments\": {}, \"name\": \"g\"}]}",
            "{\"tool_calls\": [{\"name\": 5, \"arguments\": {}}]}",
            "{\"tool_calls\": [{\"name\": \"bad \\q escape\", \"arguments\": {}}]}",
            "{ \"tool_calls\" : {}}",
            "{\"tool_calls\": [{\"arguments\": {\"a\": 1}, \"x\": 2}]}",
            "{\"tool_calls\": [{\"arguments\": {\"a\": 1}}]}",
            "{\"tool_calls\": [{\"arguments\": {\"a\": \"ü\"}",
            "{",
            "{\"tool",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Nested arguments.
        for depth in [1usize, 2, 10, 200] {
            let args = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            out.push(format!(
                "{{\"tool_calls\": [{{\"name\": \"deep\", \"arguments\": {{\"a\": {args}}}}}]}}"
            ));
        }
        out
    }

    #[test]
    fn stream_matches_parse_reply_for_every_split() {
        let mut rng = SplitMix64(18);
        for text in shapes() {
            let want = expected(&text);
            assert_eq!(stream(&[&text]), want, "whole: {text:?}");
            let cuts = cuts(&text);
            // Every piece one character.
            let chars: Vec<&str> = pieces_at(&text, &cuts);
            assert_eq!(stream(&chars), want, "per char: {text:?}");
            // Every split in two, and every split in three for short texts.
            for (n, &i) in cuts.iter().enumerate() {
                assert_eq!(stream(&pieces_at(&text, &[i])), want, "{text:?} at {i}");
                if text.len() <= 120 {
                    for &j in &cuts[n + 1..] {
                        assert_eq!(
                            stream(&pieces_at(&text, &[i, j])),
                            want,
                            "{text:?} at {i},{j}"
                        );
                    }
                }
            }
            // Random splits, with empty pieces too.
            for _ in 0..200 {
                let mut at: Vec<usize> = cuts
                    .iter()
                    .copied()
                    .filter(|_| rng.next_u64().is_multiple_of(4))
                    .collect();
                if rng.next_u64().is_multiple_of(3) && !at.is_empty() {
                    at.insert(0, at[0]);
                }
                assert_eq!(stream(&pieces_at(&text, &at)), want, "{text:?} at {at:?}");
            }
        }
    }

    #[test]
    fn deep_arguments_are_read_without_recursion() {
        // serde_json reads a raw value without its recursion limit; so does the stream.
        let depth = 20_000;
        let text = format!(
            "{{\"tool_calls\": [{{\"name\": \"deep\", \"arguments\": {}{}}}]}}",
            "{\"a\": [".repeat(depth) + "{",
            "}]".repeat(depth) + "}"
        );
        let want = expected(&text);
        assert_eq!(want.1.len(), 1);
        assert_eq!(stream(&[&text]), want);
    }

    #[test]
    fn stream_keeps_calls_already_sent() {
        // Text that leaves the tool-call shape after a call was sent (impossible under the
        // constraint): the call stays, the rest is dropped; parse_reply calls it content.
        for (text, args) in [
            (
                "{\"tool_calls\": [{\"name\": \"f\", \"name\": \"g\", \"arguments\": {}}]}",
                "",
            ),
            (
                "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": [1]}]}",
                "",
            ),
            (
                "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]} and text",
                "{\"a\":1}",
            ),
            (
                "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": 1}}], \"x\": 1}",
                "{\"a\":1}",
            ),
            // Cut off (max_tokens): a partial call, as OpenAI streams it.
            (
                "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": ",
                "{\"a\":",
            ),
        ] {
            assert!(matches!(parse_reply(text), Reply::Content(_)), "{text}");
            for at in cuts(text) {
                let got = stream(&pieces_at(text, &[at]));
                assert_eq!(
                    got,
                    (String::new(), vec![("f".into(), args.into())]),
                    "{text} at {at}"
                );
            }
        }
    }

    #[test]
    fn stream_sends_calls_as_they_arrive() {
        let mut s = ToolStream::new();
        assert_eq!(s.push("  "), vec![]);
        assert_eq!(s.push("{\"tool_calls\": [{\"name\": \"get_"), vec![]);
        let d = s.push("weather\", \"arguments\": {\"ci");
        let [
            StreamDelta::CallStart { index: 0, id, name },
            StreamDelta::Arguments { index: 0, fragment },
        ] = &d[..]
        else {
            panic!("{d:?}")
        };
        assert!(id.starts_with("call_"));
        assert_eq!(name, "get_weather");
        assert_eq!(fragment, "{\"ci");
        assert_eq!(
            s.push("ty\": \"Paris\"}}"),
            vec![StreamDelta::Arguments {
                index: 0,
                fragment: "ty\":\"Paris\"}".into()
            }]
        );
        assert_eq!(s.push("]}"), vec![]);
        assert_eq!(s.finish(), vec![]);
        assert_eq!(s.calls_started(), 1);
        // A cut-off call stays a partial call (finish adds nothing).
        let mut s = ToolStream::new();
        let d = s.push("{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"a\": ");
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(s.finish(), vec![]);
        // Text streams at once, leading whitespace with it.
        let mut s = ToolStream::new();
        assert_eq!(s.push(" \n"), vec![]);
        assert_eq!(
            s.push("Hi"),
            vec![
                StreamDelta::Content(" \nH".into()),
                StreamDelta::Content("i".into())
            ]
        );
        assert_eq!(s.push(" {"), vec![StreamDelta::Content(" {".into())]);
    }

    #[test]
    fn stream_takes_any_input() {
        let mut rng = SplitMix64(7);
        let alphabet: Vec<char> = "{}[]\":,\\ \n\tnametoolcalsrgu0123é😀x-_".chars().collect();
        let prefix = "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": ";
        for round in 0..3000 {
            let len = (rng.next_u64() % 80) as usize;
            let mut text: String = if round % 2 == 0 {
                prefix.into()
            } else {
                "{".into()
            };
            for _ in 0..len {
                text.push(alphabet[(rng.next_u64() % alphabet.len() as u64) as usize]);
            }
            let mut s = ToolStream::new();
            let mut deltas = Vec::new();
            let mut from = 0;
            for i in cuts(&text) {
                if rng.next_u64().is_multiple_of(3) {
                    deltas.extend(s.push(&text[from..i]));
                    from = i;
                }
            }
            deltas.extend(s.push(&text[from..]));
            deltas.extend(s.finish());
            // Whatever came out is well formed, and the text is never lost: content is the
            // whole text, or calls were sent and their arguments are a piece of it.
            let (content, calls) = replay(&deltas);
            if calls.is_empty() {
                assert_eq!(content, text);
            }
            let held: usize = [s.held.len(), s.early_args.len()].iter().sum();
            assert!(held <= text.len());
        }
    }

    #[test]
    fn serialised_shapes_are_openai_s() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        };
        assert_eq!(
            serde_json::to_value(call.message()).unwrap(),
            json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}})
        );
        let start = StreamDelta::CallStart {
            index: 1,
            id: "call_2".into(),
            name: "g".into(),
        };
        assert_eq!(
            serde_json::to_value(start.tool_call().unwrap()).unwrap(),
            json!({"index": 1, "id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}})
        );
        let args = StreamDelta::Arguments {
            index: 1,
            fragment: "{\"b".into(),
        };
        assert_eq!(
            serde_json::to_value(args.tool_call().unwrap()).unwrap(),
            json!({"index": 1, "function": {"arguments": "{\"b"}})
        );
        assert!(StreamDelta::Content("x".into()).tool_call().is_none());
    }

    #[test]
    fn history_renders_calls_in_the_reply_format() {
        let mut h = History::new();
        let calls = json!([
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\", \"days\": [1,2]}"}},
            {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}}
        ]);
        let text = h.assistant_text(2, "ignored", Some(&calls)).unwrap();
        assert_eq!(
            text,
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}, {"name": "now", "arguments": {}}]}"#
        );
        // It reads back as the same calls.
        assert_eq!(
            calls_of(&text),
            [
                (
                    "get_weather".to_string(),
                    r#"{"city":"Paris","days":[1,2]}"#.to_string()
                ),
                ("now".to_string(), "{}".to_string())
            ]
        );
        assert_eq!(h.assistant_text(0, "plain", None).unwrap(), "plain");
        assert_eq!(
            h.assistant_text(0, "plain", Some(&json!([]))).unwrap(),
            "plain"
        );
        assert_eq!(
            h.tool_result_text(3, Some(&json!("call_a")), "{\"temp\": 21}")
                .unwrap(),
            r#"{"tool_call_id": "call_a", "name": "get_weather", "content": {"temp": 21}}"#
        );
        assert_eq!(
            h.tool_result_text(4, Some(&json!("call_b")), "12:00")
                .unwrap(),
            r#"{"tool_call_id": "call_b", "name": "now", "content": "12:00"}"#
        );
        assert_eq!(
            h.tool_result_text(5, Some(&json!("call_zz")), "42")
                .unwrap(),
            r#"{"tool_call_id": "call_zz", "content": "42"}"#
        );
        assert_eq!(
            h.tool_result_text(5, None, "say \"hi\"").unwrap(),
            r#"{"content": "say \"hi\""}"#
        );
        let e = h.tool_result_text(5, Some(&json!(5)), "x").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[5].tool_call_id"));
    }

    fn calls_of(text: &str) -> Vec<(String, String)> {
        calls(&parse_reply(text))
    }

    #[test]
    fn history_errors_name_the_part() {
        let cases = [
            (
                json!({"id": "x"}),
                "messages[3].tool_calls",
                "must be an array",
            ),
            (json!([1]), "messages[3].tool_calls[0]", "got a number"),
            (
                json!([{"type": "code", "function": {"name": "f", "arguments": "{}"}}]),
                "messages[3].tool_calls[0].type",
                "only \"function\"",
            ),
            (
                json!([{"id": 5, "function": {"name": "f", "arguments": "{}"}}]),
                "messages[3].tool_calls[0].id",
                "must be a string",
            ),
            (
                json!([{"id": "a"}]),
                "messages[3].tool_calls[0].function",
                "must be an object",
            ),
            (
                json!([{"function": {"arguments": "{}"}}]),
                "messages[3].tool_calls[0].function.name",
                "missing",
            ),
            (
                json!([{"function": {"name": "f", "arguments": {"a": 1}}}]),
                "messages[3].tool_calls[0].function.arguments",
                "must be a string",
            ),
            (
                json!([{"function": {"name": "f", "arguments": "{}"}}, {"function": {"name": "f", "arguments": "{oops"}}]),
                "messages[3].tool_calls[1].function.arguments",
                "is not JSON",
            ),
        ];
        for (calls, param, text) in cases {
            let e = History::new()
                .assistant_text(3, "", Some(&calls))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{calls}: {}", e.message);
            assert!(e.message.contains(text), "{calls}: {}", e.message);
        }
    }

    // ----- the grammars, compiled and run -----

    use bitnet_constraint::{Constraint, Vocabulary};

    const EOT: u32 = 256;

    /// Byte tokens (id = byte), an end-of-turn token, and merges like a BPE vocabulary's.
    fn vocab() -> (Vocabulary, Vec<Vec<u8>>) {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"<|eot_id|>".to_vec());
        for m in [
            "{\"",
            "\": ",
            "\", \"",
            ", \"",
            "\"}",
            "}]}",
            "tool_calls",
            "name",
            "arguments",
            "get_weather",
            "lookup",
            " {",
            "Hello",
            "{}",
            "é",
        ] {
            tokens.push(m.as_bytes().to_vec());
        }
        let mut special = vec![false; tokens.len()];
        special[EOT as usize] = true;
        let v = Vocabulary::new(tokens.clone(), special, vec![EOT]).unwrap();
        (v, tokens)
    }

    fn allowed(c: &mut Constraint, n: usize, id: u32) -> bool {
        let mut logits = vec![0.0f32; n];
        c.mask(&mut logits).is_ok() && logits[id as usize].is_finite()
    }

    /// Does the grammar accept exactly `text` (fed byte by byte, then the end of turn)?
    fn accepts(v: &Vocabulary, g: &Grammar, text: &str) -> bool {
        let mut c = v.compile(g).unwrap();
        for &b in text.as_bytes() {
            if !allowed(&mut c, v.len(), b as u32) {
                return false;
            }
            c.accept(b as u32).unwrap();
        }
        c.is_finished() || allowed(&mut c, v.len(), EOT)
    }

    const WEATHER: &str =
        r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}"#;
    const LOOKUP: &str = r#"{"tool_calls": [{"name": "lookup", "arguments": {"item": {"id": 7}, "again": {"item": {"id": 8}}}}]}"#;
    const BOTH: &str = r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "lookup", "arguments": {}}]}"#;

    #[test]
    fn grammars_accept_exactly_the_reply_format() {
        let (v, _) = vocab();
        let g = |choice: Value, parallel| tools_with(choice, parallel).grammar(None).unwrap();
        assert!(tools_with(json!("none"), true).grammar(None).is_none());

        let auto = g(json!("auto"), true);
        for ok in [
            "",
            "Hello",
            "Hello {\"tool_calls\": []}",
            "  \n Hi",
            "\n",
            "ünïcode }{",
            WEATHER,
            LOOKUP,
            BOTH,
        ] {
            assert!(accepts(&v, &auto, ok), "auto should accept {ok:?}");
        }
        let spaced = format!("  {WEATHER}");
        assert!(accepts(&v, &auto, &spaced));
        for bad in [
            "{",
            "{\"answer\": 1}",
            "{\"tool_calls\": []}",
            r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}"#,
            r#"{"tool_calls": [{"name": "nope", "arguments": {}}]}"#,
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {}}]}"#,
            r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": 5}}]}"#,
            r#"{"tool_calls": [{"arguments": {"city": "Paris"}, "name": "get_weather"}]}"#,
            r#"{"tool_calls": [{"name": "lookup", "arguments": {"item": {"id": "x"}}}]}"#,
            &format!("{WEATHER} and text"),
            &format!("{WEATHER}\n"),
        ] {
            assert!(!accepts(&v, &auto, bad), "auto should refuse {bad:?}");
        }
        let auto_one = g(json!("auto"), false);
        assert!(accepts(&v, &auto_one, WEATHER));
        assert!(!accepts(&v, &auto_one, BOTH));

        let required = g(json!("required"), true);
        for ok in [WEATHER, LOOKUP, BOTH] {
            assert!(accepts(&v, &required, ok), "required should accept {ok:?}");
        }
        for bad in ["", "Hello", " ", "{\"tool_calls\": []}"] {
            assert!(
                !accepts(&v, &required, bad),
                "required should refuse {bad:?}"
            );
        }
        let required_one = g(json!("required"), false);
        assert!(accepts(&v, &required_one, LOOKUP));
        assert!(!accepts(&v, &required_one, BOTH));

        let named = g(
            json!({"type": "function", "function": {"name": "lookup"}}),
            true,
        );
        assert!(accepts(&v, &named, LOOKUP));
        for bad in [WEATHER, BOTH, "Hello", ""] {
            assert!(!accepts(&v, &named, bad), "named should refuse {bad:?}");
        }
    }

    /// Generate under `g` with random logits (the end of turn favoured, so texts end; in half
    /// the runs the first token favours `{"`, so auto replies are calls too) and return the
    /// text; `None` if it ran out of tokens.
    fn generate(
        v: &Vocabulary,
        tokens: &[Vec<u8>],
        g: &Grammar,
        rng: &mut SplitMix64,
    ) -> Option<String> {
        let mut c = v.compile(g).unwrap();
        let mut out = Vec::new();
        let mut logits = vec![0.0f32; tokens.len()];
        let open = tokens.iter().position(|t| t == b"{\"").unwrap();
        let favour_call = rng.next_u64().is_multiple_of(2);
        for step in 0..4000 {
            if c.is_finished() {
                return Some(String::from_utf8(out).unwrap());
            }
            for l in logits.iter_mut() {
                *l = rng.uniform(0.0, 1.0);
            }
            logits[EOT as usize] += 0.2;
            if step == 0 && favour_call {
                logits[open] += 1.0;
            }
            c.mask(&mut logits).unwrap();
            let (id, _) = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            c.accept(id as u32).unwrap();
            if id as u32 == EOT {
                return Some(String::from_utf8(out).unwrap());
            }
            out.extend_from_slice(&tokens[id]);
        }
        None
    }

    #[test]
    fn generated_replies_read_back_whole_and_streamed() {
        let (v, tokens) = vocab();
        let mut rng = SplitMix64(2026);
        let cases = [
            (json!("auto"), true),
            (json!("auto"), false),
            (json!("required"), true),
            (json!("required"), false),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                false,
            ),
        ];
        for (choice, parallel) in cases {
            let tools = tools_with(choice.clone(), parallel);
            let g = tools.grammar(None).unwrap();
            let (mut texts, mut calls_seen) = (0, 0);
            for _ in 0..40 {
                let Some(text) = generate(&v, &tokens, &g, &mut rng) else {
                    continue;
                };
                texts += 1;
                let reply = parse_reply(&text);
                match &reply {
                    Reply::Content(c) => {
                        assert_eq!(tools.choice, ToolChoice::Auto, "{choice}: {text:?}");
                        assert!(
                            !c.trim_start_matches(is_json_ws).starts_with('{'),
                            "{text:?}"
                        );
                    }
                    Reply::ToolCalls(calls) => {
                        calls_seen += 1;
                        assert!(parallel || calls.len() == 1, "{text:?}");
                        for call in calls {
                            // Raw values: a random integer may exceed f64, which is still JSON.
                            let args: HashMap<String, &RawValue> =
                                serde_json::from_str(&call.arguments).unwrap();
                            match call.name.as_str() {
                                "get_weather" => {
                                    let city = args["city"].get();
                                    assert!(
                                        serde_json::from_str::<String>(city).is_ok(),
                                        "{text:?}"
                                    );
                                }
                                "lookup" => {
                                    assert!(!matches!(tools.choice, ToolChoice::Named(_)));
                                }
                                other => panic!("unknown function {other}: {text:?}"),
                            }
                        }
                    }
                }
                let want = expected(&text);
                for _ in 0..20 {
                    let at: Vec<usize> = cuts(&text)
                        .into_iter()
                        .filter(|_| rng.next_u64().is_multiple_of(3))
                        .collect();
                    assert_eq!(stream(&pieces_at(&text, &at)), want, "{text:?} at {at:?}");
                }
            }
            assert!(texts >= 20, "{choice}: only {texts} replies ended");
            if tools.choice == ToolChoice::Auto {
                assert!(
                    calls_seen >= 5 && texts - calls_seen >= 5,
                    "{choice}: {calls_seen} of {texts}"
                );
            } else {
                assert_eq!(calls_seen, texts, "{choice}");
            }
        }
    }

    #[test]
    fn grammar_errors_name_the_function() {
        let (v, _) = vocab();
        let tools = json!([
            weather(),
            tool(
                "bad",
                json!({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": true}}})
            )
        ]);
        for choice in [json!("auto"), json!("required")] {
            let t = Tools::parse(Some(&tools), Some(&choice), None, None)
                .unwrap()
                .unwrap();
            let g = t.grammar(None).unwrap();
            let e = v.compile(&g).unwrap_err();
            let api = t.grammar_error(&v, &e);
            assert_eq!(
                api.param.as_deref(),
                Some("tools[1].function.parameters"),
                "{}",
                api.message
            );
            assert!(api.message.contains("uniqueItems"), "{}", api.message);
            assert!(api.message.contains("\"bad\""), "{}", api.message);
        }
        // Too big to enforce: refused when parsed, naming `tools`.
        let big: Vec<Value> = (0..100)
            .map(|i| {
                let props: Map<String, Value> = (0..60)
                    .map(|j| {
                        (
                            format!("property_number_{j}"),
                            json!({"type": "string", "description": "x".repeat(10)}),
                        )
                    })
                    .collect();
                tool(
                    &format!("f{i}"),
                    json!({"type": "object", "properties": props}),
                )
            })
            .collect();
        let e = parse_err(Value::Array(big), None);
        assert_eq!(e.param.as_deref(), Some("tools"));
        assert!(
            e.message.contains("the limit is 262144 bytes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_round_trip_renders_in_bitnet_s_chat_format() {
        let tools = Tools::parse(Some(&json!([weather()])), None, Some(false), None)
            .unwrap()
            .unwrap();
        let mut h = History::new();
        let call = json!([{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]);
        let messages = [
            ChatMessage::new("system", format!("{}\n\nBe brief.", tools.system_prompt())),
            ChatMessage::new("user", "Weather in Paris?"),
            ChatMessage::new("assistant", h.assistant_text(2, "", Some(&call)).unwrap()),
            ChatMessage::new(
                "tool",
                h.tool_result_text(3, Some(&json!("call_1")), "{\"temp_c\": 21}")
                    .unwrap(),
            ),
        ];
        let template = bitnet_tokenizer::ChatTemplate::for_model(
            "bitnet-b1.58",
            None,
            "<|begin_of_text|>",
            "<|eot_id|>",
        )
        .unwrap();
        let prompt = template.render(&messages, true).unwrap();
        let tail = "<|eot_id|>User: Weather in Paris?<|eot_id|>Assistant: {\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}<|eot_id|>Tool: {\"tool_call_id\": \"call_1\", \"name\": \"get_weather\", \"content\": {\"temp_c\": 21}}<|eot_id|>Assistant: ";
        assert!(prompt.starts_with("<|begin_of_text|>System: You have access to the following functions:\n{\"name\": \"get_weather\""), "{prompt}");
        assert!(prompt.ends_with(tail), "{prompt}");
        // The assistant turn in the history is what the grammar accepts.
        let (v, _) = vocab();
        assert!(accepts(
            &v,
            &tools.grammar(None).unwrap(),
            &messages[2].content
        ));
    }
}
