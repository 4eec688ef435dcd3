//! Target `chat_template`: arbitrary conversations through BitNet's chat format, and arbitrary
//! template sources with arbitrary conversations through the Jinja path (minijinja with the
//! render fuel budget), then the rendered prompt through the tokenizer as the chat endpoint
//! encodes it (`add_bos = false`, `parse_special = true`).
//!
//! Input: UTF-8 text split at NUL characters: the template source, then role, content, role,
//! content, …; an even number of parts asks for the generation prompt.
//!
//! Promises checked: no panic or hang (fuel) whatever the template and messages; BitNet's
//! format starts with BOS, has one `<|eot_id|>` per message and ends with `Assistant: ` when
//! asked; every rendered prompt survives `decode(encode(prompt)) == prompt`.

use crate::vocab::{BOS, EOS, bitnet_chat, tokenizer};
use bitnet_tokenizer::{ChatMessage, ChatTemplate};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let add_generation_prompt = rest.len() % 2 == 1;
    let messages: Vec<ChatMessage> = rest
        .chunks(2)
        .map(|c| ChatMessage::new(c[0], c.get(1).copied().unwrap_or_default()))
        .collect();

    let bitnet = bitnet_chat()
        .render(&messages, add_generation_prompt)
        .expect("BitNet's format renders any conversation");
    if !messages.is_empty() {
        assert!(bitnet.starts_with(BOS), "{bitnet:?}");
    }
    if add_generation_prompt {
        assert!(bitnet.ends_with("Assistant: "), "{bitnet:?}");
    }
    assert!(bitnet.matches("<|eot_id|>").count() >= messages.len());
    round_trip(&bitnet);

    if let Ok(t) = ChatTemplate::from_jinja(source, BOS, EOS)
        && let Ok(prompt) = t.render(&messages, add_generation_prompt)
    {
        round_trip(&prompt);
    }
}

fn round_trip(prompt: &str) {
    let tok = tokenizer();
    let ids = tok.encode(prompt, false, true);
    assert_eq!(tok.decode(&ids), prompt);
}
