//! Target `tokenizer`: the encode/decode round trip and streaming detokenization on the harness
//! vocabulary ([`crate::vocab`]).
//!
//! Promises checked, for any input:
//! - as text (when it is UTF-8): every id is in the vocabulary and `decode(encode(s)) == s`,
//!   with and without special-token parsing; with BOS, the ids start with BOS; with the Qwen2
//!   split the text comes back in NFC, so encoding the decoded text gives the same ids; with the
//!   SentencePiece-style vocabulary `decode(encode(s))` is `s` with `▁` read as a space, and an
//!   embedding encoding is BOS then the plain encoding;
//! - as token ids (pairs of bytes, many outside the vocabulary): `decode` never panics; the
//!   output stream (`TextStream`) without stop strings gives exactly `decode` of the known ids,
//!   and with stop strings gives a prefix of it that contains no stop string and, when it is
//!   shorter, ends right before one.

use crate::vocab::{qwen2_tokenizer, spm_tokenizer, tokenizer};
use bitnet_tokenizer::TextStream;

pub fn run(data: &[u8]) {
    let tok = tokenizer();
    if let Ok(text) = std::str::from_utf8(data) {
        for parse_special in [false, true] {
            let ids = tok.encode(text, false, parse_special);
            assert!(
                ids.iter().all(|&id| (id as usize) < tok.vocab_size()),
                "encode gave an id outside the vocabulary: {ids:?}"
            );
            assert_eq!(
                tok.decode(&ids),
                text,
                "decode(encode(s)) != s with parse_special = {parse_special}; ids {ids:?}"
            );
        }
        let with_bos = tok.encode(text, true, true);
        assert_eq!(with_bos.first().copied(), tok.bos_id());

        let qwen = qwen2_tokenizer();
        let ids = qwen.encode(text, false, true);
        let back = qwen.decode(&ids);
        assert_eq!(
            qwen.encode(&back, false, true),
            ids,
            "Qwen2 split: encoding the decoded (NFC) text changed the ids"
        );

        let spm = spm_tokenizer();
        let spaced = text.replace('\u{2581}', " ");
        for parse_special in [false, true] {
            let ids = spm.encode(text, false, parse_special);
            assert!(
                ids.iter().all(|&id| (id as usize) < spm.vocab_size()),
                "SentencePiece-style encode gave an id outside the vocabulary: {ids:?}"
            );
            assert_eq!(
                spm.decode(&ids),
                spaced,
                "SentencePiece-style decode(encode(s)) != s; ids {ids:?}"
            );
        }
        let embed = spm.encode_for_embedding(text, true);
        assert_eq!(embed.first().copied(), spm.bos_id());
        assert_eq!(&embed[1..], spm.encode(text, false, true));
    }

    let ids: Vec<u32> = data
        .chunks(2)
        .map(|c| u32::from(u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)])) % 1024)
        .collect();
    let _ = tok.decode(&ids);
    let known: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|&id| (id as usize) < tok.vocab_size())
        .collect();
    let expected = tok.decode(&known);
    let (plain, stopped) = stream(&known, &[]);
    assert_eq!(
        plain, expected,
        "the stream without stops differs from decode"
    );
    assert!(stopped.is_none());

    // Stop strings taken from the output itself, so they do occur.
    let stops: Vec<String> = [known.len() / 2, known.len().saturating_sub(1)]
        .iter()
        .filter_map(|&i| known.get(i))
        .map(|&id| String::from_utf8_lossy(tok.token_bytes(id)).into_owned())
        .chain(["\n\n".to_string()])
        .collect();
    let (out, _) = stream(&known, &stops);
    assert!(
        expected.starts_with(&out),
        "the stream with stops {stops:?} is not a prefix of the text: {out:?} vs {expected:?}"
    );
    for s in stops.iter().filter(|s| !s.is_empty()) {
        assert!(!out.contains(s.as_str()), "stop {s:?} leaked into {out:?}");
    }
    if out.len() < expected.len() {
        let rest = &expected[out.len()..];
        assert!(
            stops
                .iter()
                .any(|s| !s.is_empty() && rest.starts_with(s.as_str())),
            "the stream ended at {:?} without a stop string there ({stops:?})",
            out.len()
        );
    }
}

/// Token bytes through a [`TextStream`] the way the scheduler feeds it: the text sent, and the
/// stop string that ended it.
fn stream(ids: &[u32], stops: &[String]) -> (String, Option<String>) {
    let tok = tokenizer();
    let mut s = TextStream::new(stops);
    let mut out = String::new();
    for &id in ids {
        let pushed = s.push(tok.token_bytes(id));
        out.push_str(&pushed.text);
        if pushed.stop.is_some() {
            return (out, pushed.stop);
        }
    }
    out.push_str(&s.finish());
    (out, None)
}
