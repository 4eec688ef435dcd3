#!/usr/bin/env python3
"""Concurrency benchmark for a running bitnet-server (issue 3, must-show 3).

Usage: bench_concurrency.py BASE_URL [--clients 8] [--max-tokens 64] [--overload 0]
                            [--min-ratio 3.0] [--model NAME] [--api-key KEY] [--json]

1. One streaming completion alone: its decode rate (tokens after the first / time from the
   first to the last token).
2. CLIENTS streaming completions at once: aggregate decode throughput (all tokens after each
   stream's first / wall time from the earliest first token to the latest last token), and the
   ratio to the single stream. Every request must finish with exactly MAX_TOKENS tokens
   (`ignore_eos` keeps lengths fixed): a lost or short request fails the run.
3. With --overload N: N extra requests at once on top; each must get 200 or 503 (queue full,
   with Retry-After), nothing else, and /health must still answer 200 afterwards.

Needs `httpx` (or `httpx2`, which `openai` >= 3 installs). Exit 1 on a lost request, an unexpected
status, or a ratio below --min-ratio.
"""

import argparse
import asyncio
import json
import sys
import time

try:
    import httpx
except ImportError:
    try:  # openai >= 3 depends on the renamed fork, with the same API
        import httpx2 as httpx
    except ImportError:  # pragma: no cover
        sys.exit("httpx is not installed: pip install httpx (or `pip install openai`)")


async def stream_completion(client, url, headers, body):
    """Run one streaming completion; return (status, tokens, t_first, t_last, finish)."""
    t_first = t_last = None
    tokens = 0
    finish = None
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, 0, None, None, None
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            now = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    t_first = t_first or now
                    t_last = now
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
    return 200, tokens, t_first, t_last, finish


def body_for(args, model):
    body = {
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model:
        body["model"] = model
    return body


async def main_async(args):
    base = args.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + args.overload + 4)
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
        model = args.model
        if model is None:
            r = await client.get(f"{base}/v1/models", headers=headers)
            model = r.json()["data"][0]["id"]
        url = f"{base}/v1/completions"
        body = body_for(args, model)
        failures = []

        # Warm-up, then one stream alone.
        await stream_completion(client, url, headers, dict(body, max_tokens=4))
        status, n, t0, t1, finish = await stream_completion(client, url, headers, body)
        if status != 200 or n != args.max_tokens or t0 is None or t1 is None or t1 <= t0:
            sys.exit(f"single stream failed: status {status}, {n} tokens, finish {finish}")
        single = (n - 1) / (t1 - t0)

        # CLIENTS at once.
        results = await asyncio.gather(*[stream_completion(client, url, headers, body) for _ in range(args.clients)])
        ok = [r for r in results if r[0] == 200 and r[1] == args.max_tokens and r[2] is not None]
        for i, r in enumerate(results):
            if not (r[0] == 200 and r[1] == args.max_tokens):
                failures.append(f"concurrent request {i}: status {r[0]}, {r[1]} tokens, finish {r[4]}")
        aggregate = 0.0
        if ok:
            start = min(r[2] for r in ok)
            end = max(r[3] for r in ok)
            aggregate = sum(r[1] - 1 for r in ok) / (end - start) if end > start else 0.0
        ratio = aggregate / single if single > 0 else 0.0

        overload = {}
        if args.overload:
            total = args.clients + args.overload
            small = dict(body, max_tokens=min(8, args.max_tokens))
            res = await asyncio.gather(
                *[stream_completion(client, url, headers, small) for _ in range(total)],
                return_exceptions=True,
            )
            for r in res:
                key = type(r).__name__ if isinstance(r, Exception) else str(r[0])
                overload[key] = overload.get(key, 0) + 1
            unexpected = {k: v for k, v in overload.items() if k not in ("200", "503")}
            if unexpected:
                failures.append(f"overload: unexpected outcomes {unexpected}")
            health = await client.get(f"{base}/health")
            if health.status_code != 200:
                failures.append(f"overload: /health answered {health.status_code} afterwards")

        summary = {
            "model": model,
            "max_tokens": args.max_tokens,
            "clients": args.clients,
            "single_stream_tokens_per_second": round(single, 2),
            "aggregate_tokens_per_second": round(aggregate, 2),
            "ratio": round(ratio, 2),
            "completed": len(ok),
            "overload_outcomes": overload,
            "failures": failures,
        }
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"model {model}, {args.max_tokens} tokens per request")
            print(f"single stream:      {single:8.2f} tok/s")
            print(f"{args.clients} concurrent streams: {aggregate:8.2f} tok/s aggregate ({ratio:.2f}x), "
                  f"{len(ok)}/{args.clients} complete")
            if overload:
                print(f"overload outcomes:  {overload}")
            for f in failures:
                print(f"FAIL: {f}")
        if failures:
            return 1
        if args.min_ratio and ratio < args.min_ratio:
            print(f"FAIL: ratio {ratio:.2f} below --min-ratio {args.min_ratio}")
            return 1
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base_url")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--overload", type=int, default=0, help="extra simultaneous requests to provoke 503s")
    p.add_argument("--min-ratio", type=float, default=0.0)
    p.add_argument("--prompt", default="The history of computing began")
    p.add_argument("--model", default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.clients < 1 or args.max_tokens < 2:
        sys.exit("--clients must be >= 1 and --max-tokens >= 2")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
