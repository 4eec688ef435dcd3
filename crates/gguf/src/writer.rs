//! Writes GGUF v3 files: used by `cargo xtask gen-model` and by tests that need model files.
//!
//! It writes what it is given; it does not check that the tensors make a valid model.

use super::{Array, DEFAULT_ALIGNMENT, GgmlType, Value};
use std::io::{self, Write};

/// Builds a GGUF v3 file in memory-light fashion: metadata and tensor headers are collected,
/// tensor bytes are streamed by `write_to` from the provided buffers.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    /// `general.alignment` when set; the default (32) otherwise.
    alignment: Option<u64>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Writes the tensor data with this alignment (a power of two) and records it as
    /// `general.alignment`. Readers must accept any power of two; tests use 1 to put tensors at
    /// odd addresses.
    pub fn alignment(&mut self, alignment: u64) -> &mut Self {
        assert!(
            alignment.is_power_of_two(),
            "alignment must be a power of two"
        );
        self.metadata.retain(|(k, _)| k != "general.alignment");
        let value = u32::try_from(alignment).expect("alignment fits in u32");
        self.metadata
            .push(("general.alignment".into(), Value::U32(value)));
        self.alignment = Some(alignment);
        self
    }

    /// Adds a tensor; `dims` is ne0 first, `data` must be exactly `ty.nbytes(dims)` long.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        let want = ty.nbytes(dims).expect("tensor shape must be storable");
        assert_eq!(data.len() as u64, want, "tensor {name}: data size");
        self.tensors
            .push((name.to_string(), dims.to_vec(), ty, data));
        self
    }

    /// Serialises the file with its alignment (32 unless [`GgufWriter::alignment`] set another).
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<u64> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut header, k);
            header.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut header, v);
        }
        let align = self.alignment.unwrap_or(DEFAULT_ALIGNMENT);
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut header, name);
            header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + data.len() as u64).div_ceil(align) * align;
        }
        let pad = |len: u64| (len.div_ceil(align) * align - len) as usize;
        let mut written = header.len() as u64;
        w.write_all(&header)?;
        let p = pad(written);
        w.write_all(&vec![0u8; p])?;
        written += p as u64;
        for (_, _, _, data) in &self.tensors {
            w.write_all(data)?;
            let p = pad(data.len() as u64);
            w.write_all(&vec![0u8; p])?;
            written += (data.len() + p) as u64;
        }
        Ok(written)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            match a {
                Array::U8(v) => out.extend_from_slice(v),
                Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
                Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
                Array::U16(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::I16(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::U32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::I32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::F32(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::U64(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::I64(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::F64(v) => v
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
                Array::String(v) => v.iter().for_each(|x| put_str(out, x)),
            }
        }
    }
}

/// Convenience constructors for metadata arrays.
pub fn str_array<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Value {
    Value::Array(Array::String(items.into_iter().collect()))
}

pub fn i32_array<I: IntoIterator<Item = i32>>(items: I) -> Value {
    Value::Array(Array::I32(items.into_iter().collect()))
}

pub fn f32_array<I: IntoIterator<Item = f32>>(items: I) -> Value {
    Value::Array(Array::F32(items.into_iter().collect()))
}
