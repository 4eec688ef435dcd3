"""One llama.cpp benchmark cell through llama-cpp-python, printed as the same JSON object that
`bitnet-server bench` prints: load time, pp (one batch of -p tokens from an empty cache), tg (-n
single-token steps from an empty cache), peak RSS. One untimed warm-up of each test first, as
llama-bench does. Run by `cargo xtask bench`; the token ids come from a fixed seed.

Usage: bench_llamacpp.py MODEL --threads T [-p 128] [-n 64] [-r 1]
"""

import argparse
import json
import os
import random
import resource
import sys
import time


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=1)
    args = ap.parse_args()

    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=args.n_prompt + args.n_gen,
        n_batch=args.n_prompt,
        n_ubatch=args.n_prompt,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        use_mmap=True,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    rng = random.Random(0x5EED)
    prompt = [rng.randrange(n_vocab) for _ in range(args.n_prompt)]
    gen = [rng.randrange(n_vocab) for _ in range(args.n_gen)]

    def run_pp():
        llm.reset()  # n_tokens = 0: eval() drops every cached position from 0 on
        t = time.perf_counter()
        llm.eval(prompt)
        return args.n_prompt / (time.perf_counter() - t)

    def run_tg():
        llm.reset()  # n_tokens = 0: eval() drops every cached position from 0 on
        t = time.perf_counter()
        for tok in gen:
            llm.eval([tok])
        return args.n_gen / (time.perf_counter() - t)

    run_pp()
    run_tg()
    pp, tg = [], []
    for _ in range(args.reps):
        pp.append(run_pp())
        tg.append(run_tg())
    doc = {
        "engine": "llama.cpp",
        "version": "llama-cpp-python " + llama_cpp.__version__,
        "kernel": "ggml-cpu",
        "threads": args.threads,
        "n_prompt": args.n_prompt,
        "n_gen": args.n_gen,
        "load_s": load_s,
        "pp_tok_s": pp,
        "tg_tok_s": tg,
        "peak_rss_bytes": peak_rss_bytes(),
        "file_bytes": os.path.getsize(args.model),
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
