//! Encoding and decoding of the tensor formats, element by element: the readable reference.
//!
//! `ternary` packs and unpacks I2_S, TQ2_0 and TQ1_0 exactly as the reference spec lays the
//! bits out; `dequant` turns any supported tensor type into f32. The fast paths that multiply
//! packed weights without unpacking them are in `crate::kernels`; this module is what tests
//! and `gen-model` hold them against. It does not do matrix products.

pub mod dequant;
pub mod ternary;

pub use dequant::{dequantize, dequantize_row_into};
