//! The model's weight matrices as the kernels see them.
//!
//! Ternary matrices keep their on-disk packing (borrowed from the mapped file); products go
//! through `bitnet_kernels`, which quantize activations per token to int8
//! (docs/model.md#activation-quantization) and apply bitnet.cpp's epilogue
//! (docs/model.md#the-ternary-matrix-product). This module only locates and validates the bytes.

use bitnet_gguf::{GgufFile, TensorInfo};
use bitnet_kernels::{KernelError, TernaryFormat, TernaryView};

/// A ternary weight matrix `[rows × cols]` located in a GGUF file.
#[derive(Debug, Clone)]
pub struct TernaryTensor {
    pub format: TernaryFormat,
    pub rows: usize,
    pub cols: usize,
    /// Absolute byte range of the packed codes (without the I2_S trailer).
    start: usize,
    len: usize,
    /// Per-tensor scale (I2_S); 1.0 for the TQ formats, whose block scales are inline.
    pub scale: f32,
}

impl TernaryTensor {
    /// Locates a ternary tensor and checks it against the kernels' layout rules.
    pub fn new(file: &GgufFile, t: &TensorInfo) -> Result<TernaryTensor, KernelError> {
        let (cols, rows) = (
            t.dims[0] as usize,
            t.dims.get(1).copied().unwrap_or(1) as usize,
        );
        let start = (file.data_offset() + t.offset) as usize;
        let data = file.tensor_data(t);
        let view = match t.ty.ternary_format() {
            Some(TernaryFormat::I2S) => TernaryView::from_i2s_tensor(rows, cols, data)?,
            Some(f) => TernaryView::new(f, rows, cols, data, 1.0)?,
            None => unreachable!("TernaryTensor::new on a {} tensor", t.ty),
        };
        Ok(TernaryTensor {
            format: view.format,
            rows,
            cols,
            start,
            len: view.data.len(),
            scale: view.scale,
        })
    }

    /// The kernels' view of this matrix inside `file` (the file it was located in).
    pub fn view<'a>(&self, file: &'a GgufFile) -> TernaryView<'a> {
        TernaryView {
            format: self.format,
            rows: self.rows,
            cols: self.cols,
            data: &file.bytes()[self.start..self.start + self.len],
            scale: self.scale,
        }
    }
}
