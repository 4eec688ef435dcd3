//! Target `gguf`: arbitrary bytes as a GGUF file, loaded the way the server loads a model —
//! the reader, the model config and weights (`Model::load`, then one forward step), the
//! tokenizer from the metadata and the chat format for the file's architecture.
//!
//! Promises checked: no panic, abort or allocation beyond the file's own size on any input;
//! every tensor the reader accepts lies inside the file with the size its type and shape give;
//! every metadata accessor answers (a value or an error) for every key.

use bitnet_gguf::GgufFile;
use bitnet_model::{LoadOptions, Logits, Model, SeqInput};
use bitnet_tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerData};

pub fn run(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    check_reader(&file);
    load_tokenizer(&file);
    load_model(&file);
}

fn check_reader(file: &GgufFile) {
    for t in file.tensors() {
        assert_eq!(t.offset % file.alignment(), 0, "{t:?} is misaligned");
        assert_eq!(Some(t.size), t.ty.nbytes(&t.dims).ok(), "{t:?}");
        assert_eq!(file.tensor_data(t).len() as u64, t.size, "{t:?}");
        assert_eq!(file.tensor(&t.name), Some(t));
    }
    for (key, value) in file.metadata() {
        // The same entry (values are compared by identity: a NaN float is not equal to itself).
        assert!(
            file.get(key).is_some_and(|v| std::ptr::eq(v, value)),
            "{key:?}"
        );
        let _ = file.get_u64(key);
        let _ = file.get_f64(key);
        let _ = file.get_str(key);
        let _ = file.get_bool(key);
        let _ = file.get_str_array(key);
        let _ = file.get_int_array(key);
    }
}

/// The tokenizer and chat format from the file's metadata, then a round trip through them.
fn load_tokenizer(file: &GgufFile) {
    let Ok(data) = TokenizerData::from_gguf(file) else {
        return;
    };
    let Ok(tok) = Tokenizer::new(data) else {
        return;
    };
    let arch = file
        .get_str("general.architecture")
        .ok()
        .flatten()
        .unwrap_or("");
    let text_of = |id: Option<u32>| {
        id.map(|i| String::from_utf8_lossy(tok.token_bytes(i)).into_owned())
            .unwrap_or_default()
    };
    let chat = ChatTemplate::for_model(
        arch,
        tok.chat_template(),
        &text_of(tok.bos_id()),
        &text_of(tok.eos_id()),
    );
    let Ok(chat) = chat else {
        return;
    };
    let messages = [ChatMessage::new("user", "Hello, world! é中文😀")];
    if let Ok(prompt) = chat.render(&messages, true) {
        let ids = tok.encode(&prompt, false, true);
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let _ = tok.decode(&ids);
    }
}

/// `Model::load` on one thread with a tiny context, then one token through the network.
fn load_model(file: &GgufFile) {
    let options = LoadOptions {
        n_ctx: Some(4),
        threads: 1,
        ..LoadOptions::default()
    };
    let Ok(model) = Model::load(file, &options) else {
        return;
    };
    let _ = model.config.kv_bytes_per_token();
    let mut cache = model.new_cache();
    let out = model
        .forward(&mut [SeqInput {
            cache: &mut cache,
            tokens: &[0],
            logits: Logits::Last,
        }])
        .expect("one token fits a context of 4");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len(), model.config.n_vocab);
}
