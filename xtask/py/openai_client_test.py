#!/usr/bin/env python3
"""Drive a running bitnet-server with the official `openai` Python client (PyPI).

Usage: openai_client_test.py BASE_URL [--model NAME] [--api-key KEY] [--timeout SECONDS]

BASE_URL is the server root, e.g. http://127.0.0.1:8080 (the script appends /v1). The checks
are about the API contract, not the model's words, so the same script runs against the test
backend and against the real engine:

  - models.list() names the served model;
  - chat.completions.create, non-streaming and streaming (with stream_options.include_usage);
  - completions.create, non-streaming and streaming;
  - seeded sampling is reproducible; logprobs come back for chat;
  - errors surface as the client's typed exceptions (NotFoundError, BadRequestError).

Exit status 0 when every check passes; 1 with a list of failures otherwise.
"""

import argparse
import sys
import time

try:
    import openai
except ImportError:  # pragma: no cover - environment problem, reported clearly
    sys.exit("the `openai` package is not installed: pip install openai")

from client_checks import check, report, run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--model", default=None, help="model name (default: the first listed)")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    client = openai.OpenAI(
        base_url=args.base_url.rstrip("/") + "/v1",
        api_key=args.api_key,
        timeout=args.timeout,
        max_retries=0,
    )
    print(f"openai {openai.__version__} against {args.base_url}")

    models = client.models.list()
    ids = [m.id for m in models.data]
    check("models.list returns the served model", len(ids) >= 1, f"got {ids}")
    model = args.model or ids[0]
    check("the requested model is listed", model in ids, f"{model} not in {ids}")
    messages = [{"role": "user", "content": "Say hello in one short sentence."}]

    def chat_plain():
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        choice = r.choices[0]
        check("chat: object type", r.object == "chat.completion", r.object)
        check("chat: assistant message", choice.message.role == "assistant", choice.message.role)
        check("chat: content is text", isinstance(choice.message.content, str), repr(choice.message.content))
        check("chat: finish_reason", choice.finish_reason in ("stop", "length"), choice.finish_reason)
        u = r.usage
        check("chat: usage adds up", u.total_tokens == u.prompt_tokens + u.completion_tokens and 0 < u.completion_tokens <= 8, str(u))

    def chat_stream():
        stream = client.chat.completions.create(
            model=model, messages=messages, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, chunks = "", None, None, 0
        for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                if c.delta.content:
                    text += c.delta.content
                if c.finish_reason:
                    finish = c.finish_reason
        check("chat stream: chunks arrive", chunks >= 2, f"{chunks} chunks")
        check("chat stream: finish_reason", finish in ("stop", "length"), str(finish))
        check("chat stream: usage chunk", usage is not None and 0 < usage.completion_tokens <= 8, str(usage))
        plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        check("chat stream: same text as non-streaming (greedy)", text == plain.choices[0].message.content,
              f"{text!r} vs {plain.choices[0].message.content!r}")

    def completions_plain():
        r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
        check("completions: object type", r.object == "text_completion", r.object)
        check("completions: text", isinstance(r.choices[0].text, str), repr(r.choices[0].text))
        check("completions: finish_reason", r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
        check("completions: usage", r.usage is not None and 0 < r.usage.completion_tokens <= 6, str(r.usage))

    def completions_stream():
        stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True)
        pieces = [c.choices[0].text for c in stream if c.choices]
        check("completions stream: pieces arrive", len(pieces) >= 1, f"{len(pieces)} pieces")
        plain = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0)
        check("completions stream: same text as non-streaming (greedy)", "".join(pieces) == plain.choices[0].text,
              f"{''.join(pieces)!r} vs {plain.choices[0].text!r}")

    def seeded():
        kw = dict(model=model, messages=messages, max_tokens=8, temperature=0.9, seed=42)
        a = client.chat.completions.create(**kw).choices[0].message.content
        b = client.chat.completions.create(**kw).choices[0].message.content
        check("seed: same seed, same text", a == b, f"{a!r} vs {b!r}")

    def logprobs():
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=3, temperature=0,
                                           logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        check("logprobs: one entry per token", len(content) == r.usage.completion_tokens or
              (r.choices[0].finish_reason == "stop" and len(content) == r.usage.completion_tokens - 1),
              f"{len(content)} entries for {r.usage.completion_tokens} tokens")
        check("logprobs: values are log-probabilities", all(e.logprob <= 0 for e in content), str([e.logprob for e in content]))
        check("logprobs: top alternatives", all(len(e.top_logprobs) == 2 for e in content), "")

    def errors():
        try:
            client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
            check("errors: unknown model raises NotFoundError", False, "no exception")
        except openai.NotFoundError as e:
            check("errors: unknown model raises NotFoundError", e.status_code == 404, str(e))
        try:
            client.chat.completions.create(model=model, messages=[], max_tokens=2)
            check("errors: empty messages raise BadRequestError", False, "no exception")
        except openai.BadRequestError as e:
            check("errors: empty messages raise BadRequestError", e.status_code == 400, str(e))

    started = time.time()
    for name, fn in [("chat", chat_plain), ("chat stream", chat_stream), ("completions", completions_plain),
                     ("completions stream", completions_stream), ("seed", seeded), ("logprobs", logprobs),
                     ("errors", errors)]:
        run(name, fn)
    return report(f" in {time.time() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
