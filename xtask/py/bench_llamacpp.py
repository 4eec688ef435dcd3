"""One llama.cpp benchmark cell through llama-cpp-python, printed as the same JSON object that
`bitnet-server bench` prints: load time, peak RSS, and either

- the pp-tg workload: pp (one batch of -p tokens; several sizes with -p 512,2048) and tg (-n
  single-token steps) at each cache depth of -d (the tokens already in the cache when the timed
  test starts: evaluated untimed once, then every test cuts the cache back to its depth and
  evaluates on top), depth 0 always included; or
- the rag workload (--workload rag): -r requests of a -p-token prompt (default 2048, fed in
  512-token batches, as the server's prefill chunks) then a greedy answer of -n tokens (default
  128), each from an empty cache: time to first token and the answer's decode speed.

One untimed warm-up first, as llama-bench does. Run by `cargo xtask bench`; the token ids come
from a fixed seed.

Usage: bench_llamacpp.py MODEL --threads T [-p 128[,512]] [-n 64] [-d 0,1024] [-r 1]
                         [--workload pp-tg|rag]
"""

import argparse
import json
import os
import random
import resource
import sys
import time

# Tokens per batch when a long prompt or a depth is fed: bitnet-server's prefill chunk.
PREFILL_CHUNK = 512


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sizes(text):
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 128 or 0,1024")
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("-p", "--n-prompt", type=sizes, default=None)
    ap.add_argument("-n", "--n-gen", type=int, default=None)
    ap.add_argument("-d", "--depth", type=sizes, default=[0])
    ap.add_argument("-r", "--reps", type=int, default=1)
    ap.add_argument("--workload", choices=["pp-tg", "rag"], default="pp-tg")
    args = ap.parse_args()
    rag = args.workload == "rag"
    prompts = args.n_prompt or [2048 if rag else 128]
    n_gen = args.n_gen if args.n_gen is not None else (128 if rag else 64)
    depths = sorted(set(args.depth) | {0})
    if min(prompts) < 1 or n_gen < 1 or args.reps < 1:
        ap.error("-p, -n and -r must be at least 1")
    if rag and (len(prompts) > 1 or depths != [0] or n_gen < 2):
        ap.error("--workload rag takes one -p, no -d, and -n of at least 2")

    import llama_cpp
    import numpy as np

    # Every size in one ubatch for pp (as bitnet-server's one forward pass), at least a prefill
    # chunk for the untimed fills; the rag prompt goes in prefill chunks.
    n_batch = PREFILL_CHUNK if rag else max(max(prompts), PREFILL_CHUNK)
    n_ctx = prompts[0] + n_gen if rag else max(depths) + max(max(prompts), n_gen)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        use_mmap=True,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    rng = random.Random(0x5EED)
    prompt = [rng.randrange(n_vocab) for _ in range(max(prompts))]
    gen = [rng.randrange(n_vocab) for _ in range(n_gen)]
    filler = [rng.randrange(n_vocab) for _ in range(max(depths))]

    doc = {
        "engine": "llama.cpp",
        "version": "llama-cpp-python " + llama_cpp.__version__,
        "kernel": "ggml-cpu",
        "threads": args.threads,
        "workload": args.workload,
        "n_prompt": prompts[0],
        "n_gen": n_gen,
        "load_s": load_s,
    }

    # `n_tokens` is how much of the cache the next eval() keeps: eval() drops every cached
    # position from n_tokens on, then decodes on top. Setting it cuts the cache back to a depth.
    def run_pp(depth, n):
        llm.n_tokens = depth
        t = time.perf_counter()
        llm.eval(prompt[:n])
        return n / (time.perf_counter() - t)

    def run_tg(depth):
        llm.n_tokens = depth
        t = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        return n_gen / (time.perf_counter() - t)

    def greedy():
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
        )
        return int(logits.argmax())

    def request(tokens, n):
        llm.reset()
        t = time.perf_counter()
        llm.eval(tokens)
        tok = greedy()
        ttft = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n - 1):
            llm.eval([tok])
            tok = greedy()
        return ttft, time.perf_counter() - t

    if rag:
        p = prompts[0]
        request(prompt[: min(p, PREFILL_CHUNK)], 2)
        ttft_ms, prompt_tok_s, decode_tok_s = [], [], []
        for _ in range(args.reps):
            ttft, decode = request(prompt, n_gen)
            ttft_ms.append(ttft * 1e3)
            prompt_tok_s.append(p / ttft)
            decode_tok_s.append((n_gen - 1) / decode)
        doc["rag"] = {
            "n_prompt": p,
            "n_gen": n_gen,
            "prefill_chunk": PREFILL_CHUNK,
            "ttft_ms": ttft_ms,
            "prompt_tok_s": prompt_tok_s,
            "decode_tok_s": decode_tok_s,
        }
    else:
        run_pp(0, prompts[0])
        run_tg(0)
        llm.reset()
        llm.eval(filler)
        results = []
        for depth in reversed(depths):
            pp = {n: [] for n in prompts}
            tg = []
            for _ in range(args.reps):
                for n in prompts:
                    pp[n].append(run_pp(depth, n))
                tg.append(run_tg(depth))
            results.append(
                {
                    "depth": depth,
                    "pp_tok_s": pp[prompts[0]],
                    "tg_tok_s": tg,
                    "pp": [{"n_prompt": n, "tok_s": pp[n]} for n in prompts],
                    "tg": [{"batch": 1, "tok_s": tg}],
                }
            )
        results.reverse()
        doc.update(
            {
                "batch": 1,
                "pp_tok_s": results[0]["pp_tok_s"],
                "tg_tok_s": results[0]["tg_tok_s"],
                "pp": results[0]["pp"],
                "tg": results[0]["tg"],
                "depths": results,
            }
        )
    doc["peak_rss_bytes"] = peak_rss_bytes()
    doc["file_bytes"] = os.path.getsize(args.model)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
