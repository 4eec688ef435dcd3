//! Encoding and decoding of the tensor formats, element by element: the readable reference.
//!
//! `ternary` is the one codec of I2_S, TQ2_0 and TQ1_0 ([`ternary::TernaryFormat`]: block
//! geometry, pack, unpack, exactly as the reference spec lays the bits out); `dequant` turns any
//! supported tensor type into f32. The fast paths that multiply packed weights without
//! unpacking them are in `bitnet_kernels`; they read rows with this codec's layout and are
//! tested against it, and `gen-model` writes with it. It does not do matrix products.

pub mod dequant;
pub mod ternary;

pub use dequant::{dequantize, dequantize_row_into};
