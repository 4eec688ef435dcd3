#!/usr/bin/env python3
"""Time to first token with and without the prompt cache, on a real bitnet-server.

Usage: prompt_cache_ttft.py --server BIN --model FILE [--turns 10] [--turn-words 150]
                            [--reply-tokens 32] [--rag-words 1500] [--threads 2] [--json]

Starts the server twice on 127.0.0.1 (one after the other, so they never share the cores):
once with the prompt cache off (`--cache-ram 0`) and once with its default budget, and runs the
same two workloads against each:

1. chat: a conversation of TURNS turns through `/v1/chat/completions` (streamed), each user
   message about TURN_WORDS words, each reply REPLY_TOKENS tokens written by the model and sent
   back as the assistant message of the next turn, as a chat client does. TTFT of every turn is
   the time from sending the request to the first streamed content.
2. rag: a system prompt with retrieved passages of about RAG_WORDS words, asked two different
   questions one after the other: TTFT of the second (whose passages the server has seen).
3. fill: FILL requests with distinct passages of the same size (one token each), more than the
   cache budget holds, so it evicts; then the server's peak RSS (VmHWM) and the pool's bytes.
   The peak RSS of the cached run minus the uncached one is what the cache cost, to compare
   with the budget (`--cache-ram`, default 512MiB here so that the fill exceeds it).

Prints TTFT per turn for both servers, the ratio for the last chat turn and the second RAG
question, and the server's `/metrics` counts of cached and computed prompt tokens. The words
are drawn from a fixed list with a fixed seed, so both servers get identical requests; the
model's replies are greedy (temperature 0), so they are identical too.

Standard library only. Exits 1 if a server fails to start or a request fails.
"""

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import time

WORDS = (
    "the system data model server cache prompt token request answer question passage document "
    "memory context user value time first last second number table result source field search "
    "index vector query text file report engine batch stream client network record history "
    "policy change order price market water energy city river mountain forest garden window "
    "people school music paper story light house world family friend summer winter morning"
).split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Server:
    def __init__(self, binary, model, threads, extra):
        self.port = free_port()
        args = [binary, "serve", "-m", model, "--host", "127.0.0.1", "--port", str(self.port),
                "-t", str(threads), "--parallel", "1"] + extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                status, _ = self.get("/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit("the server was not ready within 300 s")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def get(self, path):
        c = self.conn()
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()

    def chat(self, messages, max_tokens):
        """Stream one chat completion: (TTFT seconds, reply text)."""
        body = json.dumps({"messages": messages, "max_tokens": max_tokens, "temperature": 0,
                           "stream": True})
        c = self.conn()
        t0 = time.perf_counter()
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            sys.exit(f"chat request failed: {r.status} {r.read().decode()[:500]}")
        ttft, text = None, []
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece is not None:
                    ttft = ttft or time.perf_counter() - t0
                    text.append(piece)
        if ttft is None:
            sys.exit("a chat reply had no content")
        return ttft, "".join(text)

    def metrics(self):
        _, text = self.get("/metrics")
        out = {}
        for line in text.splitlines():
            if line.startswith(("bitnet_prompt_tokens", "bitnet_prompt_cache")):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def peak_rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run(server, args):
    rng = random.Random(args.seed)
    messages = [{"role": "system", "content": "You are a helpful assistant. " + words(rng, 40)}]
    chat = []
    for _ in range(args.turns):
        messages.append({"role": "user", "content": words(rng, args.turn_words)})
        ttft, reply = server.chat(messages, args.reply_tokens)
        chat.append(ttft)
        messages.append({"role": "assistant", "content": reply})
    passages = "Answer from these passages.\n\n" + "\n\n".join(
        f"Passage {i + 1}: " + words(rng, 100) for i in range(max(1, args.rag_words // 100)))
    rag = []
    for _ in range(2):
        question = [{"role": "system", "content": passages},
                    {"role": "user", "content": "Question: " + words(rng, 20) + "?"}]
        rag.append(server.chat(question, args.reply_tokens)[0])
    for _ in range(args.fill):
        fill = "Answer from these passages.\n\n" + words(rng, args.rag_words)
        server.chat([{"role": "system", "content": fill}, {"role": "user", "content": "?"}], 1)
    return {"chat_ttft_s": chat, "rag_ttft_s": rag, "metrics": server.metrics(),
            "peak_rss_bytes": server.peak_rss()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--turn-words", type=int, default=150)
    p.add_argument("--reply-tokens", type=int, default=32)
    p.add_argument("--rag-words", type=int, default=1500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fill", type=int, default=8)
    p.add_argument("--cache-ram", default="512MiB", help="budget of the cached run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    results = {}
    for name, extra in (("off", ["--cache-ram", "0"]),
                        ("on", ["--cache-ram", args.cache_ram])):
        server = Server(args.server, args.model, args.threads, extra)
        try:
            results[name] = run(server, args)
        finally:
            server.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    off, on = results["off"], results["on"]
    print("| turn | TTFT without cache ms | with cache ms | ratio |")
    print("|---|---|---|---|")
    for i, (a, b) in enumerate(zip(off["chat_ttft_s"], on["chat_ttft_s"])):
        print(f"| chat {i + 1} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f}× |")
    for i, (a, b) in enumerate(zip(off["rag_ttft_s"], on["rag_ttft_s"])):
        print(f"| rag question {i + 1} | {a * 1e3:.0f} | {b * 1e3:.0f} | {a / b:.2f}× |")
    for name in ("off", "on"):
        r = results[name]
        print(f"cache {name}: peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB; {r['metrics']}")
    extra = (on["peak_rss_bytes"] - off["peak_rss_bytes"]) / 2**20
    print(f"peak RSS with the cache minus without: {extra:.0f} MiB (budget {args.cache_ram})")


if __name__ == "__main__":
    main()
