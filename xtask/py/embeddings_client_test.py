#!/usr/bin/env python3
"""Drive an embedding bitnet-server (and a chat one) with the `openai` client and LangChain.

Usage: embeddings_client_test.py EMBED_URL CHAT_URL [--api-key KEY] [--timeout SECONDS]

EMBED_URL and CHAT_URL are server roots (e.g. http://127.0.0.1:8081); the script appends /v1.
The embedding server must run an embedding model, the chat server a generation model. The
checks are about the API contract and the vectors' algebra, not the meaning of the texts, so
they hold on synthetic weights:

  - openai `embeddings.create`: one string, a list (same vectors as one at a time), the client's
    default base64 encoding equal to `encoding_format="float"`, `dimensions` (the first values
    renormalised), token-id input, `usage`, unit-length vectors of the width /health reports;
  - bad input surfaces as `BadRequestError`: an empty string, 2,049 inputs, a token id outside
    the vocabulary, a text longer than the context (and with `truncate` it is accepted);
  - langchain-openai `OpenAIEmbeddings` (`check_embedding_ctx_length=False`: it would otherwise
    tokenize with OpenAI's tiktoken vocabulary, which is not this model's) embeds documents and
    a query;
  - a small RAG round trip: embed ten documents, retrieve the nearest to a query by cosine (the
    query repeats one document, so the answer is known for any weights), and send it as context
    to the chat server, which answers.

Exit status 0 when every check passes; 1 with a list of failures otherwise.
"""

import argparse
import json
import math
import sys
import urllib.request

try:
    import openai
except ImportError:  # pragma: no cover - environment problem, reported clearly
    sys.exit("the `openai` package is not installed: pip install openai")

FAILURES = []

DOCUMENTS = [
    "Neo4j stores data as nodes and relationships in a property graph.",
    "BitNet b1.58 uses ternary weights: every weight is -1, 0 or +1.",
    "A vector index finds the stored embeddings nearest to a query vector.",
    "Docker Compose starts several containers from one YAML file.",
    "The Rhine flows from the Swiss Alps to the North Sea.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Rust guarantees memory safety without a garbage collector.",
    "Retrieval-augmented generation adds retrieved passages to the prompt.",
    "The Eiffel Tower was finished in 1889 for the World's Fair.",
    "Kubernetes restarts containers whose health checks fail.",
]


def check(name, condition, detail=""):
    status = "ok" if condition else "FAIL"
    print(f"[{status}] {name}" + (f": {detail}" if detail and not condition else ""))
    if not condition:
        FAILURES.append(f"{name}: {detail}")


def run(name, fn):
    try:
        fn()
    except Exception as exc:  # any client error is a failed check, not a crash
        check(name, False, f"{type(exc).__name__}: {exc}")


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def expect_bad_request(name, fn, needle):
    try:
        fn()
    except openai.BadRequestError as exc:
        check(name, needle in str(exc), f"message lacks {needle!r}: {exc}")
        return
    except Exception as exc:
        check(name, False, f"expected BadRequestError, got {type(exc).__name__}: {exc}")
        return
    check(name, False, "the request was accepted")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embed_url")
    parser.add_argument("chat_url")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    with urllib.request.urlopen(args.embed_url.rstrip("/") + "/health", timeout=args.timeout) as r:
        health = json.load(r)
    dim = health.get("embedding_dim")
    check("/health reports the embedding width", isinstance(dim, int) and dim > 0, str(health))
    if not isinstance(dim, int):
        return finish()

    emb = openai.OpenAI(
        base_url=args.embed_url.rstrip("/") + "/v1", api_key=args.api_key, timeout=args.timeout
    )
    chat = openai.OpenAI(
        base_url=args.chat_url.rstrip("/") + "/v1", api_key=args.api_key, timeout=args.timeout
    )
    model = emb.models.list().data[0].id
    chat_model = chat.models.list().data[0].id

    single = {}

    def one_string():
        r = emb.embeddings.create(model=model, input=DOCUMENTS[0])
        v = r.data[0].embedding
        check("one string: one vector", len(r.data) == 1 and r.data[0].index == 0)
        check("one string: the model's width", len(v) == dim, f"{len(v)} != {dim}")
        check("one string: unit length", abs(norm(v) - 1) < 1e-3, f"norm {norm(v)}")
        check("usage counts the tokens", r.usage.prompt_tokens > 0 and
              r.usage.total_tokens == r.usage.prompt_tokens, str(r.usage))
        single["v"] = v

    def a_list():
        r = emb.embeddings.create(model=model, input=DOCUMENTS[:4])
        check("a list: one vector per input, in order",
              [d.index for d in r.data] == [0, 1, 2, 3], str([d.index for d in r.data]))
        c = cosine(r.data[0].embedding, single["v"])
        check("batched equals alone", c > 0.9999, f"cosine {c}")

    def float_format():
        f = emb.embeddings.create(model=model, input=DOCUMENTS[0], encoding_format="float")
        c = cosine(f.data[0].embedding, single["v"])
        check("float and base64 agree", c > 0.999999, f"cosine {c}")

    def dimensions():
        d = dim // 2
        r = emb.embeddings.create(model=model, input=DOCUMENTS[0], dimensions=d)
        v = r.data[0].embedding
        head = single["v"][:d]
        check("dimensions: the first values, renormalised",
              len(v) == d and abs(norm(v) - 1) < 1e-3 and cosine(v, head) > 0.9999,
              f"len {len(v)}")

    def token_ids():
        r = emb.embeddings.create(model=model, input=[[1, 2, 3], [4, 5]])
        check("token-id inputs", len(r.data) == 2 and len(r.data[1].embedding) == dim)

    for name, fn in [
        ("one string", one_string),
        ("a list", a_list),
        ("float format", float_format),
        ("dimensions", dimensions),
        ("token ids", token_ids),
    ]:
        run(name, fn)

    expect_bad_request("empty input is a 400",
                       lambda: emb.embeddings.create(model=model, input=""), "empty")
    expect_bad_request("2049 inputs is a 400",
                       lambda: emb.embeddings.create(model=model, input=["a"] * 2049), "2049")
    expect_bad_request("a token id outside the vocabulary is a 400",
                       lambda: emb.embeddings.create(model=model, input=[[10**9]]), "out of range")
    long_text = "word " * 50000
    expect_bad_request("a text over the context is a 400",
                       lambda: emb.embeddings.create(model=model, input=long_text), "context")

    def truncated():
        r = emb.embeddings.create(model=model, input=long_text, extra_body={"truncate": True})
        check("truncate: a long text is cut to fit", len(r.data[0].embedding) == dim)

    run("truncate", truncated)

    def langchain():
        from langchain_openai import OpenAIEmbeddings

        lc = OpenAIEmbeddings(
            model=model,
            base_url=args.embed_url.rstrip("/") + "/v1",
            api_key=args.api_key,
            check_embedding_ctx_length=False,
        )
        docs = lc.embed_documents(DOCUMENTS)
        q = lc.embed_query(DOCUMENTS[3])
        check("langchain: ten document vectors", len(docs) == 10 and all(len(d) == dim for d in docs))
        best = max(range(len(docs)), key=lambda i: cosine(q, docs[i]))
        check("langchain: the query's own document is nearest", best == 3, f"got {best}")

    run("langchain-openai OpenAIEmbeddings", langchain)

    def rag():
        docs = [d.embedding for d in emb.embeddings.create(model=model, input=DOCUMENTS).data]
        question = DOCUMENTS[7]
        q = emb.embeddings.create(model=model, input=question).data[0].embedding
        scores = [cosine(q, d) for d in docs]
        best = max(range(len(docs)), key=lambda i: scores[i])
        check("rag: retrieval finds the passage", best == 7 and scores[7] > 0.9999,
              f"best {best}, scores {scores}")
        reply = chat.chat.completions.create(
            model=chat_model,
            messages=[
                {"role": "system", "content": "Answer from this passage: " + DOCUMENTS[best]},
                {"role": "user", "content": "What does retrieval-augmented generation add?"},
            ],
            max_tokens=16,
            temperature=0,
        )
        choice = reply.choices[0]
        check("rag: the chat server answers with the passage as context",
              isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
              and reply.usage.prompt_tokens > 10, str(reply))

    run("rag round trip", rag)
    return finish()


def finish():
    print(f"{len(FAILURES)} failure(s)")
    for f in FAILURES:
        print(f"  - {f}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
