"""Write the reference token ids for the tokenizer corpus: crates/tokenizer/tests/data/tokenizer/expected.jsonl.

The reference is PyPI `quicktok-v1` 0.4.0, encoding `llama3` (LLaMA-3's byte-level BPE with
its pre-split regex; rank == id), or with a third argument `qwen3` its `qwen3` encoding (Qwen2's
split, single digits, NFC normalisation) for crates/tokenizer/tests/data/qwen3/. Lines of the corpus with "special": false are encoded with
`encode_ordinary` (special-token texts are plain text); lines with "special": true with
`encode_with_special_tokens` (every special-token text becomes its id).

Output: a first line {"reference": ..., "corpus_sha256": ..., "lines": N}, then one line
{"ids": [...]} per corpus line, in order. The Rust test crates/tokenizer/tests/tokenizer_reference.rs
checks the hash, so a corpus edited without regenerating this file fails loudly.

    target/pyenv/bin/python -m pip install quicktok-v1==0.4.0
    target/pyenv/bin/python xtask/py/tokenizer_reference.py \
        crates/tokenizer/tests/data/tokenizer/corpus.jsonl crates/tokenizer/tests/data/tokenizer/expected.jsonl
"""
import hashlib
import json
import sys
import unicodedata
from importlib.metadata import version

import quicktok

QUICKTOK_VERSION = "0.4.0"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: tokenizer_reference.py CORPUS.jsonl OUT.jsonl [llama3|qwen3]")
    name = sys.argv[3] if len(sys.argv) == 4 else "llama3"
    if name not in ("llama3", "qwen3"):
        sys.exit(f"unknown encoding {name!r}: llama3 or qwen3")
    found = version("quicktok-v1")
    if found != QUICKTOK_VERSION:
        sys.exit(f"need quicktok-v1=={QUICKTOK_VERSION} (found {found})")
    enc = quicktok.get_encoding(name)
    with open(sys.argv[1], "rb") as f:
        raw = f.read()
    rows = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]
    out = [json.dumps({
        "reference": f"quicktok-v1 {QUICKTOK_VERSION} get_encoding('{name}')",
        "corpus_sha256": hashlib.sha256(raw).hexdigest(),
        "lines": len(rows),
    })]
    for row in rows:
        text = row["text"]
        ids = enc.encode_with_special_tokens(text) if row["special"] else enc.encode_ordinary(text)
        if enc.decode_bytes(ids) != text.encode("utf-8"):
            # Qwen normalises to NFC, so decomposed text comes back composed.
            if name == "llama3" or enc.decode_bytes(ids) != unicodedata.normalize("NFC", text).encode():
                sys.exit(f"reference does not round-trip: {text!r}")
        out.append(json.dumps({"ids": ids}, separators=(",", ":")))
    with open(sys.argv[2], "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {len(rows)} expected encodings to {sys.argv[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
