"""Train the SYNTHETIC Gemma-style SentencePiece vocabulary and write its reference ids.

No package on PyPI ships Gemma 3's real tokenizer without Hugging Face access, so the Gemma
tokenizer tests use a small vocabulary of the same kind, trained here with PyPI `sentencepiece`
(pinned below): BPE, byte fallback (`<0x00>`..`<0xFF>`), no dummy prefix, no normalisation
beyond space -> `▁` (Gemma 3's settings), specials `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3 as
in Gemma, then user-defined symbols (`<mask>`, `<start_of_turn>`, ...).

Writes, into OUT_DIR (crates/tokenizer/tests/data/gemma/):
  vocab.json     {"pieces": [...], "scores": [...], "types": [...]}  (SentencePiece piece types,
                 which are llama.cpp's token types: 1 normal, 2 unknown, 3 control,
                 4 user-defined, 6 byte), read by bitnet_tokenizer::vocab::SpmVocab.
  expected.jsonl a header {"reference", "corpus_sha256", "vocab_sha256", "lines"}, then
                 {"ids": [...]} per corpus line: sentencepiece's own encoding of the line (it
                 always matches user-defined symbols and never control ones, whatever the
                 line's "special" flag; the corpus only puts user-defined symbols in special
                 lines).

With PyPI `tokenizers` installed (0.23.3 was used), the script also builds the Hugging Face BPE
tokenizer that Microsoft's converter's input would be — the same pieces, merges derived the way
bitnet_tokenizer::vocab::SpmVocab::to_gguf_merges derives them, byte fallback, spaces -> `▁`,
no pre-tokenizer — and checks that it gives sentencepiece's ids on every line, so the GGUF
"gpt2" + merges form and SentencePiece's own algorithm agree on this corpus.

The training text is the ordinary lines of the corpus itself (deterministic: one thread, fixed
seed). Usage:

    target/pyenv/bin/pip install sentencepiece==0.2.3
    python3 xtask/py/gen_tokenizer_corpus.py crates/tokenizer/tests/data/gemma/corpus.jsonl gemma
    target/pyenv/bin/python xtask/py/gemma_synthetic_vocab.py \
        crates/tokenizer/tests/data/gemma/corpus.jsonl crates/tokenizer/tests/data/gemma
"""
import hashlib
import json
import os
import sys
import tempfile
from importlib.metadata import version

import sentencepiece as spm

SENTENCEPIECE_VERSION = "0.2.3"
VOCAB_SIZE = 12000
USER_DEFINED = ["<mask>", "[multimodal]", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>"]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gemma_synthetic_vocab.py CORPUS.jsonl OUT_DIR")
    found = version("sentencepiece")
    if found != SENTENCEPIECE_VERSION:
        sys.exit(f"need sentencepiece=={SENTENCEPIECE_VERSION} (found {found})")
    corpus_path, out_dir = sys.argv[1], sys.argv[2]
    with open(corpus_path, "rb") as f:
        raw = f.read()
    rows = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]
    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(tmp, "train.txt")
        with open(train, "w", encoding="utf-8") as f:
            for row in rows:
                if not row["special"]:
                    # One sentence per line: line breaks inside a text become separate lines.
                    for line in row["text"].splitlines():
                        if line.strip():
                            f.write(line[:2000] + "\n")
        prefix = os.path.join(tmp, "gemma_synthetic")
        spm.SentencePieceTrainer.train(
            input=train, model_prefix=prefix, model_type="bpe", vocab_size=VOCAB_SIZE,
            byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
            character_coverage=0.98, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
            pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
            user_defined_symbols=USER_DEFINED, num_threads=1, seed_sentencepiece_size=100000,
            max_sentence_length=16384, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    n = sp.get_piece_size()
    types = []
    for i in range(n):
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.id_to_piece(i) in USER_DEFINED:
            types.append(4)
        else:
            types.append(1)
    vocab = json.dumps({
        "note": "SYNTHETIC Gemma-style vocabulary trained by xtask/py/gemma_synthetic_vocab.py; "
                "not Gemma 3's real tokenizer",
        "pieces": [sp.id_to_piece(i) for i in range(n)],
        "scores": [sp.get_score(i) for i in range(n)],
        "types": types,
    }, ensure_ascii=False).encode("utf-8")
    with open(os.path.join(out_dir, "vocab.json"), "wb") as f:
        f.write(vocab)
    out = [json.dumps({
        "reference": f"sentencepiece {SENTENCEPIECE_VERSION} (synthetic Gemma-style BPE model)",
        "corpus_sha256": hashlib.sha256(raw).hexdigest(),
        "vocab_sha256": hashlib.sha256(vocab).hexdigest(),
        "lines": len(rows),
    })]
    all_ids = [sp.encode(row["text"]) for row in rows]
    for ids in all_ids:
        out.append(json.dumps({"ids": ids}, separators=(",", ":")))
    check_with_hf_tokenizers(sp, types, rows, all_ids)
    with open(os.path.join(out_dir, "expected.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {n} pieces and {len(rows)} expected encodings to {out_dir}", file=sys.stderr)


def check_with_hf_tokenizers(sp, types, rows, all_ids):
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    except ImportError:
        print("tokenizers not installed: skipping the Hugging Face cross-check", file=sys.stderr)
        return
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    normal = {p: i for i, p in enumerate(pieces) if types[i] == 1}
    order = sorted(normal.values(), key=lambda i: (-sp.get_score(i), i))
    merges = []
    for i in order:
        p = pieces[i]
        parts = sorted((normal[p[:k]], normal[p[k:]]) for k in range(1, len(p))
                       if p[:k] in normal and p[k:] in normal)
        merges += [(pieces[l], pieces[r]) for l, r in parts]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.add_tokens([AddedToken(p, normalized=False, special=False) for i, p in enumerate(pieces)
                    if types[i] == 4])
    bad = [r["text"] for r, ids in zip(rows, all_ids)
           if tok.encode(r["text"], add_special_tokens=False).ids != ids]
    if bad:
        sys.exit(f"Hugging Face tokenizers disagrees with sentencepiece on {len(bad)} lines, "
                 f"e.g. {bad[0][:80]!r}")
    print(f"Hugging Face tokenizers agrees with sentencepiece on all {len(rows)} lines",
          file=sys.stderr)


if __name__ == "__main__":
    main()
