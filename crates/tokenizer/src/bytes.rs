//! The GPT-2 byte ↔ unicode mapping used by byte-level BPE vocabularies (`tokenizer.ggml.model =
//! "gpt2"`): every byte maps to one printable char so tokens and merges can be stored as text.
//!
//! This module only maps bytes; it knows nothing about merges or pre-splitting.

/// The char that stands for byte `b` in GGUF token and merge strings.
pub fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR[b as usize]
}

/// The byte a char of a GGUF token string stands for, or `None` if it is not one of the 256.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x100 && is_direct(cp as u8) {
        Some(cp as u8)
    } else if (0x100..0x100 + 256).contains(&cp) {
        // Non-printable bytes are numbered in order starting at U+0100.
        let nth = cp - 0x100;
        INDIRECT.get(nth as usize).copied()
    } else {
        None
    }
}

/// Encodes raw token bytes as a GGUF token string.
pub fn bytes_to_token_text(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

const fn is_direct(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

const INDIRECT_LEN: usize = {
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if !is_direct(b as u8) {
            n += 1;
        }
        b += 1;
    }
    n
};

/// Bytes that are not printable, in increasing order; the i-th is written as U+0100 + i.
const INDIRECT: [u8; INDIRECT_LEN] = {
    let mut out = [0u8; INDIRECT_LEN];
    let mut n = 0;
    let mut b = 0;
    while b < 256 {
        if !is_direct(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

const BYTE_TO_CHAR: [char; 256] = {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0;
    while b < 256 {
        out[b] = if is_direct(b as u8) {
            match char::from_u32(b as u32) {
                Some(c) => c,
                None => panic!(),
            }
        } else {
            let c = match char::from_u32(0x100 + n) {
                Some(c) => c,
                None => panic!(),
            };
            n += 1;
            c
        };
        b += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_chars() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0), 'Ā');
    }

    #[test]
    fn round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
