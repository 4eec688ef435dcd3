//! `bitnet-gguf`: the model file format. A GGUF v2/v3 reader over a memory map, the ggml tensor
//! types and their sizes, the one codec per ternary format and dequantization ([`quant`]), and —
//! behind the `writer` feature, for synthetic models, xtask and tests — a writer. The layouts
//! this crate implements are specified in `docs/formats.md`.
//!
//! The reader validates everything before handing out a tensor slice: counts and lengths are
//! checked against the bytes that are actually there before anything is allocated, the memory
//! the metadata and the tensor table take is bounded by [`HEADER_MEMORY_LIMIT`] (arrays are
//! typed vectors, [`Array`], so they cost about their bytes in the file), tensor sizes cannot
//! overflow, and every tensor lies inside the data section. It does not interpret metadata (that
//! is `bitnet-model`'s `config`) or multiply tensor data (that is `bitnet-kernels`), and it
//! depends on no other crate of this workspace.

pub mod quant;
mod types;
mod value;
#[cfg(feature = "writer")]
pub mod writer;

use types::known_unsupported_name;
pub use types::{GgmlType, SizeError};
pub use value::{Array, StringArray, Value, ValueType};
#[cfg(feature = "writer")]
pub use writer::GgufWriter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default `general.alignment` when the key is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// The most memory the parsed metadata and tensor table of one file may take. Real models need a
/// few MB (the 2B-4T file: under 10 MB, most of it the tokenizer's 128,256 tokens and 280,147
/// merges); anything past this is a corrupt or crafted file, refused before it is allocated.
pub const HEADER_MEMORY_LIMIT: u64 = 64 << 20;
/// Memory charged per metadata entry besides its key and value bytes: the entry, its index slot
/// (which holds a copy of the key) and allocator overhead.
const KV_OVERHEAD: u64 =
    (size_of::<(String, Value)>() + size_of::<(String, usize)>() + 2 * ALLOC_SLACK) as u64;
/// Memory charged per tensor besides its name: the parsed entry, its `TensorInfo`, its index
/// slot (a copy of the name), its dimensions and allocator overhead.
const TENSOR_OVERHEAD: u64 = (size_of::<(String, Vec<u64>, u32, u64)>()
    + size_of::<TensorInfo>()
    + size_of::<(String, usize)>()
    + MAX_DIMS * size_of::<u64>()
    + 3 * ALLOC_SLACK) as u64;
/// What the allocator may add to one heap block (header and rounding).
const ALLOC_SLACK: usize = 16;
/// ggml's maximum tensor rank.
const MAX_DIMS: usize = 4;
const MAGIC: &[u8; 4] = b"GGUF";

/// Everything that can be wrong with a GGUF file. Messages name the problem and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "not a GGUF file: it starts with {found:?} instead of \"GGUF\"; pass a .gguf model (e.g. ggml-model-i2_s.gguf), not safetensors/PyTorch weights"
    )]
    BadMagic { found: String },
    #[error(
        "GGUF file is big-endian (version reads as {0:#x}); only little-endian GGUF is supported"
    )]
    BigEndian(u32),
    #[error(
        "unsupported GGUF version {0}: this engine reads versions 2 and 3; re-convert the model with a current llama.cpp/bitnet.cpp"
    )]
    UnsupportedVersion(u32),
    #[error(
        "GGUF file is truncated: reading {what} at byte {offset} needs {needed} bytes but the file ends at byte {len}; the file is incomplete, download it again"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error(
        "GGUF header claims {count} {what}, more than the {len}-byte file can hold; the file is corrupt"
    )]
    CountTooLarge {
        what: &'static str,
        count: u64,
        len: u64,
    },
    #[error(
        "GGUF {what} needs {needed} bytes of memory, past the {limit}-byte limit on a file's metadata and tensor table ({used} bytes already taken); real models need a few MB, so the file is corrupt or crafted: use the model file as published"
    )]
    HeaderTooLarge {
        what: String,
        needed: u64,
        used: u64,
        limit: u64,
    },
    #[error("GGUF {what} at byte {offset} is not valid UTF-8; the file is corrupt")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error(
        "metadata key {key:?} has unknown value type {ty}; the file is corrupt or from a newer GGUF version"
    )]
    UnknownValueType { key: String, ty: u32 },
    #[error("metadata key {key:?} is an array of arrays, which GGUF does not allow here")]
    NestedArray { key: String },
    #[error("metadata key {0:?} appears twice; the file is corrupt")]
    DuplicateKey(String),
    #[error("tensor {0:?} appears twice; the file is corrupt")]
    DuplicateTensor(String),
    #[error("general.alignment is {0}; it must be a power of two (usually 32)")]
    BadAlignment(u64),
    #[error("tensor {name:?} has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")]
    BadRank { name: String, n_dims: u32 },
    #[error("tensor {name:?} has a zero-sized dimension {dims:?}; the file is corrupt")]
    ZeroDim { name: String, dims: Vec<u64> },
    #[error(
        "tensor {name:?} has ggml type {id}{known}, which this engine does not support; supported: F32, F16, BF16, Q8_0, Q6_K, TQ1_0, TQ2_0, I2_S"
    )]
    UnsupportedType {
        name: String,
        id: u32,
        known: String,
    },
    #[error("tensor {name:?} of type {ty} and shape {dims:?} cannot be stored: {why}")]
    BadShape {
        name: String,
        ty: GgmlType,
        dims: Vec<u64>,
        why: SizeError,
    },
    #[error(
        "tensor {name:?} starts at data offset {offset}, which is not a multiple of the alignment {alignment}; the file is corrupt"
    )]
    Misaligned {
        name: String,
        offset: u64,
        alignment: u64,
    },
    #[error(
        "tensor {name:?} occupies bytes {start}..{end} of the data section but the file has only {available}; the file is truncated or corrupt, download it again"
    )]
    TensorOutOfBounds {
        name: String,
        start: u64,
        end: u64,
        available: u64,
    },
    #[error("metadata key {key:?} is missing; {hint}")]
    MissingKey { key: String, hint: String },
    #[error("metadata key {key:?} should be {expected} but is {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("tensor {name:?} is missing; {hint}")]
    MissingTensor { name: String, hint: String },
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, `ne0` (fastest-varying, the row length) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes (validated to fit in the file).
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// A parsed, validated GGUF file. Cheap to share: tensor data stays in the (shared) mapping.
#[derive(Clone)]
pub struct GgufFile {
    inner: Arc<Inner>,
}

struct Inner {
    backing: Backing,
    version: u32,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.inner.version)
            .field("metadata", &self.inner.metadata.len())
            .field("tensors", &self.inner.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates a file. The file must not be modified while mapped (downloads are
    /// written elsewhere and renamed into place, see `bitnet-server`'s `download`).
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and model files are immutable once in place.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Backing::Mmap(mmap))
    }

    /// Parses an in-memory file (tests, small models).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(Backing::Bytes(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let bytes = backing.bytes();
        let mut r = Reader {
            bytes,
            pos: 0,
            used: 0,
        };
        let magic = r.take(4, "the magic")?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                found: String::from_utf8_lossy(magic).into_owned(),
            });
        }
        let version = r.u32("the version")?;
        if version.swap_bytes() <= 3 && version > 3 {
            return Err(GgufError::BigEndian(version));
        }
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        let len = bytes.len() as u64;
        // Each KV needs at least a key length, a type and a value; each tensor info at least
        // a name length, n_dims, one dim, a type and an offset.
        if n_kv > r.remaining() / 13 {
            return Err(GgufError::CountTooLarge {
                what: "metadata entries",
                count: n_kv,
                len,
            });
        }
        if n_tensors > r.remaining() / 32 {
            return Err(GgufError::CountTooLarge {
                what: "tensors",
                count: n_tensors,
                len,
            });
        }

        r.charge(n_kv.saturating_mul(KV_OVERHEAD), || {
            format!("table of {n_kv} metadata entries")
        })?;
        r.charge(n_tensors.saturating_mul(TENSOR_OVERHEAD), || {
            format!("table of {n_tensors} tensors")
        })?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string("a metadata key")?;
            r.charge(2 * key.len() as u64, || format!("metadata key {key:?}"))?;
            let ty = r.u32("a metadata type")?;
            let ty = ValueType::from_id(ty).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                ty,
            })?;
            let value = r.value(ty, &key)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match key_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                let a = v
                    .as_int()
                    .filter(|_| matches!(v, Value::U32(_) | Value::U64(_) | Value::I32(_)))
                    .ok_or_else(|| GgufError::WrongType {
                        key: "general.alignment".into(),
                        expected: "an unsigned integer",
                        found: v.type_description(),
                    })?;
                let a = u64::try_from(a).unwrap_or(0);
                if a == 0 || !a.is_power_of_two() {
                    return Err(GgufError::BadAlignment(a));
                }
                a
            }
        };

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("a tensor name")?;
            r.charge(2 * name.len() as u64, || format!("tensor name {name:?}"))?;
            let n_dims = r.u32("a tensor rank")?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(GgufError::BadRank { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("a tensor dimension")?);
            }
            let id = r.u32("a tensor type")?;
            let offset = r.u64("a tensor offset")?;
            raw.push((name, dims, id, offset));
        }
        let data_offset = align_up(r.pos, alignment).ok_or(GgufError::BadAlignment(alignment))?;
        let available = len.saturating_sub(data_offset);

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, dims, id, offset) in raw {
            if dims.contains(&0) {
                return Err(GgufError::ZeroDim { name, dims });
            }
            let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnsupportedType {
                name: name.clone(),
                id,
                known: known_unsupported_name(id)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
            })?;
            let size = ty.nbytes(&dims).map_err(|why| GgufError::BadShape {
                name: name.clone(),
                ty,
                dims: dims.clone(),
                why,
            })?;
            if offset % alignment != 0 {
                return Err(GgufError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            match offset.checked_add(size) {
                Some(end) if end <= available => {}
                end => {
                    return Err(GgufError::TensorOutOfBounds {
                        name,
                        start: offset,
                        end: end.unwrap_or(u64::MAX),
                        available,
                    });
                }
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
        }

        Ok(GgufFile {
            inner: Arc::new(Inner {
                backing,
                version,
                metadata,
                key_index,
                tensors,
                tensor_index,
                alignment,
                data_offset,
            }),
        })
    }

    pub fn version(&self) -> u32 {
        self.inner.version
    }

    pub fn alignment(&self) -> u64 {
        self.inner.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.inner.data_offset
    }

    /// Total file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.inner.backing.bytes().len() as u64
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.inner.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.inner
            .key_index
            .get(key)
            .map(|&i| &self.inner.metadata[i].1)
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.inner.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.inner
            .tensor_index
            .get(name)
            .map(|&i| &self.inner.tensors[i])
    }

    /// A tensor that must exist, with a hint for the error if it does not.
    pub fn require_tensor(&self, name: &str, hint: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_string(),
            hint: hint.to_string(),
        })
    }

    /// The bytes of a tensor of this file.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.inner.data_offset + t.offset) as usize;
        &self.inner.backing.bytes()[start..start + t.size as usize]
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        self.inner.backing.bytes()
    }

    /// A key that must exist, with a hint for the error if it does not.
    pub fn require(&self, key: &str, hint: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
            hint: hint.to_string(),
        })
    }

    /// An unsigned integer key (any integer type that fits).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_int()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or_else(|| wrong_type(key, "a non-negative integer", v))
            })
            .transpose()
    }

    /// A float key (f32, f64 or an integer).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| wrong_type(key, "a number", v)))
            .transpose()
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| wrong_type(key, "a string", v)))
            .transpose()
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong_type(key, "a bool", v)))
            .transpose()
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<&StringArray>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .and_then(Array::as_strings)
                    .ok_or_else(|| wrong_type(key, "an array of strings", v))
            })
            .transpose()
    }

    /// An array of integers (any integer type whose values fit) as i64.
    pub fn get_int_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .and_then(Array::to_i64s)
                    .ok_or_else(|| wrong_type(key, "an array of integers", v))
            })
            .transpose()
    }
}

fn wrong_type(key: &str, expected: &'static str, v: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: v.type_description(),
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    pos.checked_add(alignment - 1)
        .map(|p| p / alignment * alignment)
}

/// A bounds-checked little-endian cursor that also keeps the header's memory account.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: u64,
    /// Memory charged so far against [`HEADER_MEMORY_LIMIT`].
    used: u64,
}

impl<'a> Reader<'a> {
    /// Charges `bytes` of memory to the header before they are allocated; `what` names the item.
    fn charge(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), GgufError> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= HEADER_MEMORY_LIMIT => {
                self.used = total;
                Ok(())
            }
            _ => Err(GgufError::HeaderTooLarge {
                what: what(),
                needed: bytes,
                used: self.used,
                limit: HEADER_MEMORY_LIMIT,
            }),
        }
    }

    fn remaining(&self) -> u64 {
        self.bytes.len() as u64 - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let start = self.pos as usize;
        self.pos += n;
        Ok(&self.bytes[start..start + n as usize])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        self.str(what).map(str::to_string)
    }

    /// A string borrowed from the file, checked for UTF-8.
    fn str(&mut self, what: &str) -> Result<&'a str, GgufError> {
        let len = self.u64(what)?;
        let offset = self.pos;
        let b = self.take(len, what)?;
        std::str::from_utf8(b).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset,
        })
    }

    /// `n` fixed-size elements decoded from their little-endian bytes.
    fn elements<T, const N: usize>(
        &mut self,
        n: u64,
        what: &str,
        decode: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, GgufError> {
        let b = self.take(n * N as u64, what)?;
        Ok(b.chunks_exact(N)
            .map(|c| decode(c.try_into().expect("chunks of N bytes")))
            .collect())
    }

    /// `n` strings into one buffer: a first pass finds their total length (and checks it is
    /// there) so the buffer is allocated once, at its size, after the memory is charged.
    fn strings(&mut self, n: u64, key: &str, what: &str) -> Result<StringArray, GgufError> {
        let start = self.pos;
        let mut text = 0u64;
        for _ in 0..n {
            let len = self.u64(what)?;
            self.take(len, what)?;
            text += len;
        }
        self.charge(text, || {
            format!("metadata key {key:?} (text of {n} strings)")
        })?;
        self.pos = start;
        let mut a = StringArray::with_capacity(n as usize, text as usize);
        for _ in 0..n {
            a.push(self.str(what)?);
        }
        Ok(a)
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        let what = || format!("the value of {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what())?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what())?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what())?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what())?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::Bool => Value::Bool(self.array::<1>(&what())?[0] != 0),
            ValueType::String => {
                let s = self.string(&what())?;
                self.charge(s.len() as u64, || format!("metadata key {key:?}"))?;
                Value::String(s)
            }
            ValueType::Array => {
                let et = self.u32(&what())?;
                let et = ValueType::from_id(et).ok_or_else(|| GgufError::UnknownValueType {
                    key: key.to_string(),
                    ty: et,
                })?;
                if et == ValueType::Array {
                    return Err(GgufError::NestedArray {
                        key: key.to_string(),
                    });
                }
                let n = self.u64(&what())?;
                if n > self.remaining() / et.min_size() {
                    return Err(GgufError::CountTooLarge {
                        what: "array elements",
                        count: n,
                        len: self.bytes.len() as u64,
                    });
                }
                self.charge(n * et.element_memory(), || {
                    format!("metadata key {key:?} (array[{}; {n}])", et.name())
                })?;
                let w = &what();
                Value::Array(match et {
                    ValueType::U8 => Array::U8(self.elements(n, w, |[b]| b)?),
                    ValueType::I8 => Array::I8(self.elements(n, w, |[b]| b as i8)?),
                    ValueType::Bool => Array::Bool(self.elements(n, w, |[b]| b != 0)?),
                    ValueType::U16 => Array::U16(self.elements(n, w, u16::from_le_bytes)?),
                    ValueType::I16 => Array::I16(self.elements(n, w, i16::from_le_bytes)?),
                    ValueType::U32 => Array::U32(self.elements(n, w, u32::from_le_bytes)?),
                    ValueType::I32 => Array::I32(self.elements(n, w, i32::from_le_bytes)?),
                    ValueType::F32 => Array::F32(self.elements(n, w, f32::from_le_bytes)?),
                    ValueType::U64 => Array::U64(self.elements(n, w, u64::from_le_bytes)?),
                    ValueType::I64 => Array::I64(self.elements(n, w, i64::from_le_bytes)?),
                    ValueType::F64 => Array::F64(self.elements(n, w, f64::from_le_bytes)?),
                    ValueType::String => Array::String(self.strings(n, key, w)?),
                    ValueType::Array => unreachable!("nested arrays are refused above"),
                })
            }
        })
    }
}
