//! Chat formatting: turning a list of messages into the prompt text the model was tuned on.
//!
//! * BitNet models (architectures `bitnet-b1.58` and `bitnet-25`) use the form of the Hugging
//!   Face `tokenizer_config.json` of BitNet b1.58 2B-4T, implemented natively:
//!   `<|begin_of_text|>` before the first message, then per message the role capitalised,
//!   `": "`, the trimmed content and `<|eot_id|>`; the generation prompt is `Assistant: `.
//!   Example: `<|begin_of_text|>User: Hi<|eot_id|>Assistant: `. The GGUF file's own
//!   `tokenizer.chat_template` is ignored for these architectures on purpose: the published
//!   2B-4T file embeds an older template (`Human: … BITNETAssistant: …` ending in EOS) that does
//!   not match the format the model was instruction-tuned on, and with it the model does not end
//!   its turn with `<|eot_id|>` (ik_llama.cpp issue #339; bitnet.cpp itself ignores the template
//!   and hard-codes a `User:`/`Assistant:` formatter).
//! * Other models: `tokenizer.chat_template` is rendered with minijinja the way Hugging Face
//!   `apply_chat_template` renders Jinja (trim_blocks, lstrip_blocks, Python string methods via
//!   minijinja-contrib's pycompat, `raise_exception`, `strftime_now`, variables `messages`,
//!   `bos_token`, `eos_token`, `add_generation_prompt`). Rendering runs on a fuel budget, so a
//!   hostile template cannot loop forever.
//!
//! The rendered prompt already contains BOS and special tokens as text, so encode it with
//! `Tokenizer::encode(prompt, add_bos = false, parse_special = true)`.
//!
//! Not supported: tool calls, multi-part (image) content, Python's `tojson` spacing.

use minijinja::{Environment, Error, ErrorKind, Value, context};
use std::time::{SystemTime, UNIX_EPOCH};

/// Architectures whose chat format is BitNet's (see the module docs).
pub const BITNET_ARCHITECTURES: &[&str] = &["bitnet-b1.58", "bitnet-25"];

/// Instruction budget for one render (roughly instructions, or 64-byte units of allocation).
const RENDER_FUEL: u64 = 20_000_000;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Why a chat prompt could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(
        "model architecture {arch:?} has no tokenizer.chat_template, so chat requests cannot be \
         formatted; use the plain completion API with your own prompt format"
    )]
    NoTemplate { arch: String },
    #[error("the model's tokenizer.chat_template does not compile: {0:#}")]
    Compile(#[source] Error),
    #[error("the model's tokenizer.chat_template failed to render: {0:#}")]
    Render(#[source] Error),
}

#[derive(Debug)]
enum Kind {
    BitNet,
    Jinja(Box<Environment<'static>>),
}

/// A model's chat format.
#[derive(Debug)]
pub struct ChatTemplate {
    kind: Kind,
    bos: String,
    eos: String,
}

const TEMPLATE_NAME: &str = "tokenizer.chat_template";

impl ChatTemplate {
    /// The chat format for a model: BitNet's for BitNet architectures (whatever `template`
    /// says), else `template` (the GGUF `tokenizer.chat_template`), compiled now so a broken
    /// template is reported at load time. `bos`/`eos` are the texts of the BOS/EOS tokens.
    pub fn for_model(
        arch: &str,
        template: Option<&str>,
        bos: &str,
        eos: &str,
    ) -> Result<Self, ChatError> {
        let kind = if BITNET_ARCHITECTURES.contains(&arch) {
            Kind::BitNet
        } else {
            let source = template.ok_or_else(|| ChatError::NoTemplate {
                arch: arch.to_string(),
            })?;
            Kind::Jinja(Box::new(jinja_env(source)?))
        };
        Ok(Self {
            kind,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// A Jinja chat template (HF semantics), regardless of architecture.
    pub fn from_jinja(template: &str, bos: &str, eos: &str) -> Result<Self, ChatError> {
        Ok(Self {
            kind: Kind::Jinja(Box::new(jinja_env(template)?)),
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Whether this is the built-in BitNet format.
    pub fn is_bitnet(&self) -> bool {
        matches!(self.kind, Kind::BitNet)
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        match &self.kind {
            Kind::BitNet => Ok(render_bitnet(&self.bos, messages, add_generation_prompt)),
            Kind::Jinja(env) => {
                let template = env.get_template(TEMPLATE_NAME).map_err(ChatError::Render)?;
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
                    .collect();
                template
                    .render(context! {
                        messages => messages,
                        add_generation_prompt => add_generation_prompt,
                        bos_token => self.bos.as_str(),
                        eos_token => self.eos.as_str(),
                    })
                    .map_err(ChatError::Render)
            }
        }
    }
}

fn render_bitnet(bos: &str, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for (i, m) in messages.iter().enumerate() {
        if i == 0 {
            out.push_str(bos);
        }
        out.push_str(&capitalize(&m.role));
        out.push_str(": ");
        out.push_str(python_strip(&m.content));
        out.push_str("<|eot_id|>");
    }
    if add_generation_prompt {
        out.push_str("Assistant: ");
    }
    out
}

/// Jinja's `capitalize`: first char upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// Jinja's `trim` (Python's `str.strip()`): Unicode white space plus U+001C..U+001F.
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c))
}

fn jinja_env(source: &str) -> Result<Environment<'static>, ChatError> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(ChatError::Compile)?,
    );
    env.set_fuel(Some(RENDER_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("template raised: {msg}"),
        ))
    });
    env.add_function("strftime_now", |format: String| -> Result<String, Error> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        strftime_utc(&format, secs)
    });
    env.add_template_owned(TEMPLATE_NAME, source.to_string())
        .map_err(ChatError::Compile)?;
    Ok(env)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A small `strftime` (UTC) for templates that print today's date (LLaMA-3.2's does).
fn strftime_utc(format: &str, unix_secs: u64) -> Result<String, Error> {
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{} (supported: %d %m %Y %y %B %b %A %a %H %M %S %%)",
                        other.map(String::from).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOS: &str = "<|begin_of_text|>";
    const EOS: &str = "<|end_of_text|>";

    fn bitnet() -> ChatTemplate {
        // The embedded template is ignored for BitNet architectures.
        ChatTemplate::for_model("bitnet-b1.58", Some("{{ 'ignored' }}"), BOS, EOS).unwrap()
    }

    #[test]
    fn bitnet_single_turn() {
        let t = bitnet();
        assert!(t.is_bitnet());
        let msgs = [ChatMessage::new(
            "user",
            "Hey, are you conscious? Can you talk to me?",
        )];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|begin_of_text|>User: Hey, are you conscious? Can you talk to me?<|eot_id|>Assistant: "
        );
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|begin_of_text|>User: Hey, are you conscious? Can you talk to me?<|eot_id|>"
        );
    }

    #[test]
    fn bitnet_multi_turn_trims_and_capitalises() {
        let t = ChatTemplate::for_model("bitnet-25", None, BOS, EOS).unwrap();
        let msgs = [
            ChatMessage::new("system", "  You are helpful.\n"),
            ChatMessage::new("USER", "\tHi\u{1F}"),
            ChatMessage::new("assistant", "Hello! "),
            ChatMessage::new("user", "Bye"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|begin_of_text|>System: You are helpful.<|eot_id|>User: Hi<|eot_id|>\
             Assistant: Hello!<|eot_id|>User: Bye<|eot_id|>Assistant: "
        );
        assert_eq!(t.render(&[], true).unwrap(), "Assistant: ");
    }

    /// The native BitNet formatter equals rendering the HF-style Jinja form of the same rules.
    #[test]
    fn bitnet_native_matches_jinja_form() {
        let jinja = "{% for m in messages %}{% set line = m['role'] | capitalize + ': ' + \
                     m['content'] | trim + '<|eot_id|>' %}{% if loop.first %}{% set line = \
                     bos_token + line %}{% endif %}{{ line }}{% endfor %}\
                     {% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";
        let j = ChatTemplate::from_jinja(jinja, BOS, EOS).unwrap();
        let msgs = [
            ChatMessage::new("system", " Be brief. "),
            ChatMessage::new("user", "2+2?\n"),
            ChatMessage::new("assistant", "4"),
            ChatMessage::new("user", "Thanks — ñ 中文 😀"),
        ];
        for gen_prompt in [true, false] {
            assert_eq!(
                bitnet().render(&msgs, gen_prompt).unwrap(),
                j.render(&msgs, gen_prompt).unwrap()
            );
        }
    }

    const LLAMA3_STYLE: &str = "{{ bos_token }}{% for message in messages %}\
{% if loop.index0 == 0 and message['role'] != 'system' %}{{ '<|start_header_id|>system<|end_header_id|>\n\nDefault.<|eot_id|>' }}{% endif %}\
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'].strip() + '<|eot_id|>' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    #[test]
    fn jinja_llama3_style_template() {
        let t = ChatTemplate::for_model("llama", Some(LLAMA3_STYLE), BOS, EOS).unwrap();
        assert!(!t.is_bitnet());
        let msgs = [ChatMessage::new("user", " Hi there \n")];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nDefault.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn jinja_block_whitespace_is_trimmed_like_hf() {
        // trim_blocks + lstrip_blocks: block tags on their own lines leave no blank lines.
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::from_jinja(src, BOS, EOS).unwrap();
        let msgs = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert_eq!(t.render(&msgs, false).unwrap(), "[a]\n[b]\n");
    }

    #[test]
    fn jinja_raise_exception_and_python_methods() {
        let src = "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
                   {{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}\
                   {{ m.content.upper() }}|{{ m.content.split(' ')[0] }}|{{ messages[::-1][0].content }}\
                   {% endfor %}{{ eos_token }}";
        let t = ChatTemplate::from_jinja(src, BOS, EOS).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "hello world")], false)
                .unwrap(),
            "HELLO WORLD|hello|hello world<|end_of_text|>"
        );
        let err = t
            .render(&[ChatMessage::new("tool", "x")], false)
            .unwrap_err();
        let msg = format!("{err}");
        assert!(
            msg.contains("Only user and assistant roles are supported!"),
            "{msg}"
        );
    }

    #[test]
    fn broken_or_missing_templates_are_clear_errors() {
        let err = ChatTemplate::for_model("llama", Some("{% for m in messages %}"), BOS, EOS)
            .unwrap_err();
        assert!(matches!(err, ChatError::Compile(_)));
        assert!(err.to_string().contains("does not compile"), "{err}");
        let err = ChatTemplate::for_model("qwen2", None, BOS, EOS).unwrap_err();
        assert!(
            err.to_string().contains("has no tokenizer.chat_template"),
            "{err}"
        );
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = ChatTemplate::from_jinja(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            BOS,
            EOS,
        )
        .unwrap();
        let err = t.render(&[], false).unwrap_err();
        assert!(matches!(err, ChatError::Render(_)), "{err}");
    }

    #[test]
    fn long_conversations_fit_the_fuel_budget() {
        let t = ChatTemplate::from_jinja(LLAMA3_STYLE, BOS, EOS).unwrap();
        let content = "word ".repeat(800);
        let msgs: Vec<ChatMessage> = (0..400)
            .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, &content))
            .collect();
        let out = t.render(&msgs, true).unwrap();
        assert!(out.len() > 400 * 4000);
    }

    #[test]
    fn strftime_formats_dates() {
        // 2024-07-26 13:05:09 UTC was a Friday.
        let t = 1_722_000_000 - 1_722_000_000 % 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(
            strftime_utc("%d %b %Y|%B %m %y|%A %a|%H:%M:%S %%", t).unwrap(),
            "26 Jul 2024|July 07 24|Friday Fri|13:05:09 %"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert!(strftime_utc("%Q", 0).is_err());
    }

    #[test]
    fn strftime_now_is_available_to_templates() {
        let t = ChatTemplate::from_jinja("{{ strftime_now('%Y') }}", BOS, EOS).unwrap();
        let year: i64 = t.render(&[], false).unwrap().parse().unwrap();
        assert!(year >= 2024);
    }
}
