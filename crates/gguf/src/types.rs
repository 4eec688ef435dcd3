//! ggml tensor types that can appear in BitNet GGUF files, and their storage sizes.
//!
//! This module only knows sizes and names; decoding lives in `crate::quant`. The ternary
//! types' geometry comes from their codec ([`TernaryFormat`]).

use crate::quant::ternary::{I2S_TRAILER, TernaryFormat};
use std::fmt;

/// A tensor element type this engine can read.
///
/// Ids follow upstream ggml, plus the bitnet.cpp fork's `I2_S = 36`
/// (docs/formats.md#ggml-type-ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q6K,
    Tq1_0,
    Tq2_0,
    I2S,
}

impl GgmlType {
    /// Every supported type, for error messages and iteration.
    pub const ALL: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q6K,
        GgmlType::Tq1_0,
        GgmlType::Tq2_0,
        GgmlType::I2S,
    ];

    /// The on-disk type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
            GgmlType::Tq1_0 => 34,
            GgmlType::Tq2_0 => 35,
            GgmlType::I2S => 36,
        }
    }

    /// The supported type with this id, if any.
    pub(crate) fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The name ggml gives this type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Tq1_0 => "TQ1_0",
            GgmlType::Tq2_0 => "TQ2_0",
            GgmlType::I2S => "I2_S",
        }
    }

    /// Elements per block and bytes per block. I2_S is not block-structured (see `nbytes`).
    pub fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q6K => (256, 210),
            GgmlType::Tq1_0 | GgmlType::Tq2_0 => {
                let f = self.ternary_format().expect("ternary");
                (f.block_elems() as u64, f.block_bytes() as u64)
            }
            GgmlType::I2S => (4, 1),
        }
    }

    /// Whether this is one of the ternary weight formats.
    pub fn is_ternary(self) -> bool {
        self.ternary_format().is_some()
    }

    /// The codec of a ternary type.
    pub fn ternary_format(self) -> Option<TernaryFormat> {
        match self {
            GgmlType::I2S => Some(TernaryFormat::I2S),
            GgmlType::Tq2_0 => Some(TernaryFormat::Tq2_0),
            GgmlType::Tq1_0 => Some(TernaryFormat::Tq1_0),
            _ => None,
        }
    }

    /// The GGUF type of a ternary format.
    pub fn of_ternary(format: TernaryFormat) -> GgmlType {
        match format {
            TernaryFormat::I2S => GgmlType::I2S,
            TernaryFormat::Tq2_0 => GgmlType::Tq2_0,
            TernaryFormat::Tq1_0 => GgmlType::Tq1_0,
        }
    }

    /// Bytes a tensor of shape `dims` (ne0 first) occupies, or why it cannot be stored.
    ///
    /// I2_S is special-cased as in the bitnet.cpp fork: `n/4` bytes of 2-bit codes followed by
    /// a 32-byte trailer holding the f32 tensor scale (docs/formats.md#i2_s-size).
    pub fn nbytes(self, dims: &[u64]) -> Result<u64, SizeError> {
        let n = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or(SizeError::Overflow)?;
        let (blck, size) = self.block();
        let ne0 = dims.first().copied().unwrap_or(1);
        if self == GgmlType::I2S {
            if n % 4 != 0 {
                return Err(SizeError::NotMultiple {
                    what: "element count",
                    of: 4,
                });
            }
            return (n / 4)
                .checked_add(I2S_TRAILER as u64)
                .ok_or(SizeError::Overflow);
        }
        if ne0 % blck != 0 {
            return Err(SizeError::NotMultiple {
                what: "row length (ne0)",
                of: blck,
            });
        }
        (n / blck).checked_mul(size).ok_or(SizeError::Overflow)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a tensor's size cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    Overflow,
    NotMultiple { what: &'static str, of: u64 },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Overflow => f.write_str("its size overflows 64 bits"),
            SizeError::NotMultiple { what, of } => {
                write!(f, "its {what} is not a multiple of {of}")
            }
        }
    }
}

/// Names of well-known ggml type ids this engine does not support, for clearer errors.
pub fn known_unsupported_name(id: u32) -> Option<&'static str> {
    Some(match id {
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        15 => "Q8_K",
        16..=23 | 29 => "an IQ quantization",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        37 => "I8_S (bitnet.cpp activation type)",
        38 => "TL1 (bitnet.cpp lookup-table layout)",
        39 | 42 => "TL2 (bitnet.cpp lookup-table layout)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_published_file() {
        // docs/formats.md#the-published-2b-4t-file: bytes of each tensor in ggml-model-i2_s.gguf
        assert_eq!(GgmlType::I2S.nbytes(&[2560, 2560]), Ok(1_638_432));
        assert_eq!(GgmlType::I2S.nbytes(&[2560, 640]), Ok(409_632));
        assert_eq!(GgmlType::I2S.nbytes(&[2560, 6912]), Ok(4_423_712));
        assert_eq!(GgmlType::F16.nbytes(&[2560, 128_256]), Ok(656_670_720));
        assert_eq!(GgmlType::F32.nbytes(&[6912]), Ok(27_648));
        assert_eq!(GgmlType::Tq2_0.nbytes(&[256, 2]), Ok(132));
        assert_eq!(GgmlType::Tq1_0.nbytes(&[512]), Ok(108));
        assert_eq!(GgmlType::Q8_0.nbytes(&[64]), Ok(68));
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(GgmlType::Q8_0.nbytes(&[33]).is_err());
        assert_eq!(
            GgmlType::F32.nbytes(&[u64::MAX, 2]),
            Err(SizeError::Overflow)
        );
        assert!(GgmlType::I2S.nbytes(&[6]).is_err());
    }

    #[test]
    fn ternary_types_are_their_codecs() {
        for f in TernaryFormat::ALL {
            let ty = GgmlType::of_ternary(f);
            assert_eq!(ty.ternary_format(), Some(f));
            assert_eq!(ty.name(), f.name());
            for n in [256u64, 2560 * 640] {
                assert_eq!(
                    ty.nbytes(&[n]),
                    Ok(f.tensor_bytes(n as usize) as u64),
                    "{f}"
                );
            }
        }
        assert_eq!(GgmlType::F16.ternary_format(), None);
    }

    #[test]
    fn ids_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(12), None);
    }
}
