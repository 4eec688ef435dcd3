//! Hostile and malformed GGUF files: each gives a clear error naming the problem (no panic, no
//! huge allocation). Files are built byte by byte so every field can be corrupted on purpose.

use bitnet_gguf::{
    Array, GgmlType, GgufFile, GgufWriter, HEADER_MEMORY_LIMIT, Value, ValueType, writer,
};

/// A little-endian byte builder for hand-made GGUF files.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        let mut b = B::default();
        b.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn raw(&mut self, x: &[u8]) -> &mut Self {
        self.0.extend_from_slice(x);
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.raw(&x.to_le_bytes())
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.raw(&x.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(ValueType::U32 as u32).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for d in dims {
            self.u64(*d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to the 32-byte data section and appends `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        let pad = self.0.len().div_ceil(32) * 32 - self.0.len();
        self.0.extend(std::iter::repeat_n(0u8, pad + n));
        self
    }
    fn parse(&self) -> String {
        match GgufFile::from_bytes(self.0.clone()) {
            Ok(_) => panic!("malformed file was accepted"),
            Err(e) => e.to_string(),
        }
    }
}

fn assert_err(b: &B, needles: &[&str]) {
    let msg = b.parse();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should contain {n:?}");
    }
}

#[test]
fn not_gguf() {
    let mut b = B::default();
    b.raw(b"PK\x03\x04 a zip file");
    assert_err(&b, &["not a GGUF file", "\"PK"]);
}

#[test]
fn unsupported_versions() {
    assert_err(
        &B::header(1, 0, 0),
        &["unsupported GGUF version 1", "versions 2 and 3"],
    );
    assert_err(&B::header(4, 0, 0), &["unsupported GGUF version 4"]);
    assert_err(&B::header(3u32.swap_bytes(), 0, 0), &["big-endian"]);
}

#[test]
fn truncated_everywhere() {
    let mut full = B::header(3, 1, 1);
    full.kv_u32("general.alignment", 32)
        .tensor("w", &[4], 0, 0)
        .data(16);
    // Cutting the file at every byte before its end must give a truncation/size error.
    for cut in 0..full.0.len() {
        let b = B(full.0[..cut].to_vec());
        let msg = b.parse();
        assert!(
            msg.contains("truncated") || msg.contains("not a GGUF") || msg.contains("more than"),
            "cut at {cut}: {msg}"
        );
    }
    assert!(GgufFile::from_bytes(full.0.clone()).is_ok());
    assert_err(
        &B(full.0[..full.0.len() - 1].to_vec()),
        &["tensor \"w\"", "truncated"],
    );
}

#[test]
fn counts_larger_than_the_file() {
    assert_err(
        &B::header(3, u64::MAX, 0),
        &["claims", "tensors", "corrupt"],
    );
    assert_err(&B::header(3, 0, 1 << 40), &["claims", "metadata entries"]);
    // An array claiming 2^60 u64 elements must be refused before allocating.
    let mut b = B::header(3, 0, 1);
    b.str("big")
        .u32(ValueType::Array as u32)
        .u32(ValueType::U64 as u32)
        .u64(1 << 60);
    assert_err(&b, &["array elements"]);
    // A string whose length runs past the end.
    let mut b = B::header(3, 0, 1);
    b.str("s")
        .u32(ValueType::String as u32)
        .u64(1 << 50)
        .raw(b"abc");
    assert_err(&b, &["truncated", "value of \"s\""]);
}

/// Issue 16, item 8: counts the file has room for but whose tables would take more memory than
/// `HEADER_MEMORY_LIMIT` (about 150 bytes per entry against 13 in the file, 250 per tensor
/// against 32) are refused before the tables are allocated.
#[test]
fn tables_past_the_memory_limit_are_refused() {
    let limit = format!("{HEADER_MEMORY_LIMIT}-byte limit");
    let mut b = B::header(3, 0, 700_000);
    b.data(700_000 * 13);
    assert_err(&b, &["table of 700000 metadata entries", &limit, "crafted"]);
    let mut b = B::header(3, 300_000, 0);
    b.data(300_000 * 32);
    assert_err(&b, &["table of 300000 tensors", &limit]);
    // 700,000 strings of 100 bytes: 70 MB of text and 5.6 MB of offsets.
    let mut b = B::header(3, 0, 1);
    b.str("tokenizer.ggml.tokens")
        .u32(ValueType::Array as u32)
        .u32(ValueType::String as u32)
        .u64(700_000);
    for _ in 0..700_000 {
        b.str(&"t".repeat(100));
    }
    assert_err(
        &b,
        &[
            "metadata key \"tokenizer.ggml.tokens\" (text of 700000 strings)",
            "needs 70000000 bytes",
            &limit,
        ],
    );
}

#[test]
fn bad_metadata() {
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(77).u32(0);
    assert_err(&b, &["\"k\"", "unknown value type 77"]);

    let mut b = B::header(3, 0, 1);
    b.str("k")
        .u32(ValueType::Array as u32)
        .u32(ValueType::Array as u32)
        .u64(1);
    assert_err(&b, &["array of arrays"]);

    let mut b = B::header(3, 0, 2);
    b.kv_u32("a", 1).kv_u32("a", 2);
    assert_err(&b, &["\"a\" appears twice"]);

    let mut b = B::header(3, 0, 1);
    b.u64(2)
        .raw(&[0xff, 0xfe])
        .u32(ValueType::U32 as u32)
        .u32(1);
    assert_err(&b, &["not valid UTF-8"]);

    for a in [0, 3, 48] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", a);
        assert_err(&b, &[&format!("general.alignment is {a}"), "power of two"]);
    }
    let mut b = B::header(3, 0, 1);
    b.str("general.alignment")
        .u32(ValueType::String as u32)
        .str("32");
    assert_err(
        &b,
        &[
            "general.alignment",
            "should be an unsigned integer",
            "string",
        ],
    );
}

#[test]
fn bad_tensors() {
    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut b = B::header(3, 1, 0);
        b.tensor("blk.0.attn_q.weight", dims, ty, offset).data(data);
        b
    };
    assert_err(
        &one(&[], 0, 0, 0),
        &["\"blk.0.attn_q.weight\"", "0 dimensions"],
    );
    assert_err(&one(&[1, 1, 1, 1, 1], 0, 0, 4), &["5 dimensions"]);
    assert_err(&one(&[4, 0], 0, 0, 0), &["zero-sized dimension"]);
    assert_err(
        &one(&[32], 99, 0, 64),
        &["ggml type 99", "does not support", "I2_S"],
    );
    assert_err(&one(&[256], 12, 0, 256), &["ggml type 12 (Q4_K)"]);
    assert_err(&one(&[256], 39, 0, 256), &["TL2"]);
    assert_err(
        &one(&[1 << 40, 1 << 40], 0, 0, 0),
        &["cannot be stored", "overflows"],
    );
    assert_err(&one(&[33], 8, 0, 64), &["Q8_0", "not a multiple of 32"]);
    assert_err(&one(&[4], 0, 7, 64), &["offset 7", "alignment 32"]);
    assert_err(&one(&[64], 0, 0, 100), &["bytes 0..256", "only 100"]);
    assert_err(&one(&[4], 0, u64::MAX - 31, 16), &["occupies bytes"]);
    // I2_S: n/4 + 32 bytes; 128 elements need 64 bytes.
    assert_err(&one(&[128], 36, 0, 63), &["bytes 0..64", "only 63"]);
    assert!(GgufFile::from_bytes(one(&[128], 36, 0, 64).0).is_ok());

    let mut b = B::header(3, 2, 0);
    b.tensor("t", &[8], 0, 0).tensor("t", &[8], 0, 32).data(64);
    assert_err(&b, &["tensor \"t\" appears twice"]);
}

#[test]
fn typed_getters_explain_missing_and_wrong_keys() {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", Value::String("bitnet-b1.58".into()))
        .kv("x.count", Value::U32(7))
        .kv("x.names", writer::str_array(["a", "b"]));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let e = f
        .require("x.block_count", "the file is not a complete model")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"x.block_count\" is missing; the file is not a complete model"
    );
    let e = f.get_u64("general.architecture").unwrap_err().to_string();
    assert!(
        e.contains("should be a non-negative integer but is string"),
        "{e}"
    );
    let e = f.get_str_array("x.count").unwrap_err().to_string();
    assert!(
        e.contains("an array of strings") && e.contains("u32"),
        "{e}"
    );
    assert_eq!(f.get_u64("x.count").unwrap(), Some(7));
    let names = f.get_str_array("x.names").unwrap().unwrap();
    assert_eq!(names.iter().collect::<Vec<_>>(), ["a", "b"]);
    let e = f
        .require_tensor("token_embd.weight", "hint")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "tensor \"token_embd.weight\" is missing; hint");
}

#[test]
fn every_value_type_round_trips() {
    let values = vec![
        Value::U8(200),
        Value::I8(-5),
        Value::U16(60000),
        Value::I16(-30000),
        Value::U32(4_000_000_000),
        Value::I32(-2_000_000_000),
        Value::F32(1e-5),
        Value::Bool(true),
        Value::String("héllo".into()),
        Value::U64(u64::MAX),
        Value::I64(i64::MIN),
        Value::F64(-0.25),
        Value::Array(Array::U16(vec![1, 2])),
        writer::str_array(["x", "", "z"]),
        Value::Array(Array::F32(vec![])),
        Value::Array(Array::U8(vec![0, 255, 7])),
        Value::Array(Array::I8(vec![-128, 127])),
        Value::Array(Array::Bool(vec![true, false, true])),
        Value::Array(Array::I16(vec![-2, 300])),
        Value::Array(Array::U32(vec![u32::MAX])),
        Value::Array(Array::I32(vec![-1, 1 << 30])),
        Value::Array(Array::F32(vec![0.5, -1e9])),
        Value::Array(Array::U64(vec![u64::MAX, 0])),
        Value::Array(Array::I64(vec![i64::MIN])),
        Value::Array(Array::F64(vec![-0.125, 1e300])),
    ];
    let mut w = GgufWriter::new();
    for (i, v) in values.iter().enumerate() {
        w.kv(&format!("k{i}"), v.clone());
    }
    w.tensor("a", &[3], GgmlType::F32, vec![1; 12]);
    w.tensor("b", &[256, 2], GgmlType::Tq2_0, vec![2; 132]);
    w.tensor("c", &[128, 2], GgmlType::I2S, vec![3; 96]);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.version(), 3);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(f.get(&format!("k{i}")), Some(v));
    }
    let b = f.tensor("b").unwrap();
    assert_eq!((b.ty, b.size, b.offset), (GgmlType::Tq2_0, 132, 32));
    assert_eq!(f.tensor_data(b), &[2; 132][..]);
    let c = f.tensor("c").unwrap();
    assert_eq!((c.size, c.offset), (96, 192));
    assert_eq!(f.tensor_data(c), &[3; 96][..]);
    // v2 files share the v3 layout and are accepted.
    let mut bytes = w.to_bytes();
    bytes[4] = 2;
    assert_eq!(GgufFile::from_bytes(bytes).unwrap().version(), 2);
}
