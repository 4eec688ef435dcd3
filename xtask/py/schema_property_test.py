#!/usr/bin/env python3
"""Property test of a bitnet-server's JSON-Schema and GBNF constraints on random schemas.

Usage: schema_property_test.py BASE_URL [--count N] [--seed S] [--api-key KEY] [--timeout SECONDS]

BASE_URL is the server root (e.g. http://127.0.0.1:8080). The server must run a generation
model; it is meant for a SYNTHETIC model with random weights, whose output is noise: every
valid reply is valid only because the constraint made it so.

For each of N (default 100) schemas drawn by a seeded generator from the supported subset
(object with properties/required/additionalProperties false, array with items/minItems/maxItems,
string with enum/const/maxLength/pattern, number and integer with minimum/maximum, boolean, null,
anyOf, $ref/$defs, nested up to depth 3; every string and array bounded), the script asks
POST /v1/chat/completions with response_format {type: json_schema, json_schema: {name, schema,
strict: true}} and, for every third schema, llama.cpp's POST /completion with `json_schema` too,
then checks that the reply parses (json.loads) and validates (jsonschema, from PyPI) and that the
generation ended by itself (finish_reason "stop", stop_type "eos"): the token budget of each
request is an upper bound of the longest output its schema allows (a number counted at 16
digits per part, the cap the server must apply as llama.cpp's JSON grammars do), so running out
of it ("length") is a failure too. A few GBNF grammars go through /completion's `grammar` and are checked with `re` and a small
parser. Prints a summary (schemas, valid, finish reasons) and every failure with its schema.

Exit status 0 when every output is valid; 1 otherwise.
"""

import argparse
import json
import random
import re
import sys
import time
from importlib.metadata import version
import urllib.error
import urllib.request

try:
    import jsonschema
except ImportError:  # pragma: no cover - environment problem, reported clearly
    sys.exit("the `jsonschema` package is not installed: pip install jsonschema")

from client_checks import check, report

# The most characters a JSON number may take: JSON Schema bounds a number's value, not its
# digits, so without a cap a fraction ends only when the model samples the next structural
# character, and random weights often keep writing digits until the budget ends them (seen:
# hundreds of digits). The server must cap them as llama.cpp's JSON grammars do: at most 16
# digits before the point, 16 after it and 16 in the exponent: `-` 16 `.` 16 `e-` 16.
NUMBER_MAX_CHARS = 52
# A digit run longer than that cap, named in a failure to say what went wrong.
LONG_DIGITS = re.compile(r"[0-9]{17,}")

# The sampling settings of every request: the model's whole distribution (no top-k, top-p or
# min-p cut), which explores more of each grammar than the server's default cuts (top-k 40,
# min-p 0.05), under which random weights keep choosing the same few tokens.
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}

# The largest token budget a generated schema may need; larger schemas are drawn again, so each
# request stays well inside the test model's context.
MAX_BUDGET = 1500

# Simple anchored patterns (anchored so that llguidance's full match and jsonschema's search
# agree), each with the most characters it can match.
PATTERNS = [
    (r"^[a-z]{1,8}$", 8),
    (r"^[0-9]{3}-[0-9]{4}$", 8),
    (r"^(red|green|blue)$", 5),
    (r"^[A-Z][a-z]{0,9}$", 10),
    (r"^x[0-9a-f]{2,4}$", 5),
    (r"^(yes|no)(!)?$", 4),
]

WORDS = ["alpha", "beta", "gamma", "delta", "id", "name", "kind", "value", "items", "tags",
         "city", "score", "ok", "note", "when", "who", "where", "size", "flag", "unit"]


def dumps(v):
    """JSON as the constraint writes it: `", "` and `": "` separators, no other whitespace."""
    return json.dumps(v, separators=(", ", ": "), ensure_ascii=False)


class Generator:
    """Random schemas from the supported subset, each with an upper bound of its output's
    length in tokens (one token per byte: the test model's vocabulary is byte-level with some
    merges, so bytes bound tokens from above)."""

    def __init__(self, rng):
        self.rng = rng
        self.defs = {}
        self.def_bounds = {}

    def schema(self):
        """A top-level schema (an object, as response_format needs) and its bound."""
        self.defs, self.def_bounds = {}, {}
        for i in range(self.rng.choice([0, 0, 1, 2])):
            name = f"D{i}"
            s, b = self.node(depth=2)
            self.defs[name] = s
            self.def_bounds[name] = b
        s, b = self.obj(depth=0)
        if self.defs:
            s["$defs"] = self.defs
        return s, b

    def node(self, depth):
        r = self.rng
        kinds = ["string", "integer", "number", "boolean", "null", "enum", "const", "pattern"]
        if depth < 3:
            kinds += ["object", "array", "anyOf"] * 2
        if self.def_bounds:
            kinds += ["ref"]
        kind = r.choice(kinds)
        if kind == "object":
            return self.obj(depth)
        if kind == "array":
            item, ib = self.node(depth + 1)
            lo = r.choice([0, 0, 1, 2])
            hi = lo + r.randint(0, 3)
            s = {"type": "array", "items": item, "maxItems": hi}
            if lo:
                s["minItems"] = lo
            return s, 2 + hi * (ib + 2)
        if kind == "anyOf":
            opts = [self.node(depth + 1) for _ in range(r.randint(2, 3))]
            return {"anyOf": [o[0] for o in opts]}, max(o[1] for o in opts)
        if kind == "ref":
            name = r.choice(sorted(self.def_bounds))
            return {"$ref": f"#/$defs/{name}"}, self.def_bounds[name]
        if kind == "string":
            n = r.randint(0, 12)
            # A character may be written as \uXXXX (6 bytes) or take 4 bytes in UTF-8.
            return {"type": "string", "maxLength": n}, 2 + 6 * n
        if kind == "pattern":
            pattern, n = r.choice(PATTERNS)
            return {"type": "string", "pattern": pattern, "maxLength": 12}, 2 + 6 * n
        if kind == "integer":
            lo = r.randint(-1000, 1000)
            hi = lo + r.choice([0, 1, 9, 100, 5000])
            return {"type": "integer", "minimum": lo, "maximum": hi}, max(len(str(lo)), len(str(hi)))
        if kind == "number":
            lo = r.choice([-10, 0, 0.5, 1, -2.5])
            hi = lo + r.choice([1, 10, 100.25])
            return {"type": "number", "minimum": lo, "maximum": hi}, NUMBER_MAX_CHARS
        if kind == "boolean":
            return {"type": "boolean"}, 5
        if kind == "null":
            return {"type": "null"}, 4
        if kind == "enum":
            values = r.sample(["a", "bb", "ccc", 1, 2.5, True, None, "with space", "ünï"],
                              r.randint(1, 4))
            return {"enum": values}, max(len(dumps(v).encode()) for v in values)
        value = r.choice(["fixed", 42, False, None, {"k": 1}, [1, 2]])
        return {"const": value}, len(dumps(value).encode())

    def obj(self, depth):
        r = self.rng
        names = r.sample(WORDS, r.randint(1 if depth == 0 else 0, 4))
        props, bound = {}, 2
        for name in names:
            s, b = self.node(depth + 1)
            props[name] = s
            bound += len(dumps(name).encode()) + 2 + b + 2
        required = [n for n in names if r.random() < 0.7]
        s = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            s["required"] = required
        return s, bound


def post(url, body, api_key, timeout):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"raw": text}


def validation_error(content, schema):
    """"" when `content` is JSON valid against `schema`, else what is wrong."""
    try:
        value = json.loads(content)
    except (TypeError, ValueError) as exc:
        return f"not JSON ({exc})"
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(value)]
    return "; ".join(errors)


def arithmetic_ok(s):
    """A small recursive-descent parser for the arithmetic grammar below: expr = term (("+" |
    "-") term)*, term = factor (("*" | "/") factor)*, factor = number | "(" expr ")"."""
    pos = 0

    def number():
        nonlocal pos
        m = re.match(r"[1-9][0-9]{0,2}", s[pos:])
        if not m:
            raise ValueError(f"expected a number at {pos}")
        pos += m.end()

    def factor():
        nonlocal pos
        if s.startswith("(", pos):
            pos += 1
            expr()
            if not s.startswith(")", pos):
                raise ValueError(f"expected ) at {pos}")
            pos += 1
        else:
            number()

    def term():
        nonlocal pos
        factor()
        while pos < len(s) and s[pos] in "*/":
            pos += 1
            factor()

    def expr():
        nonlocal pos
        term()
        while pos < len(s) and s[pos] in "+-":
            pos += 1
            term()

    try:
        expr()
        return pos == len(s)
    except ValueError:
        return False


# (name, GBNF, n_predict, checker). Every grammar is finite (bounded repetitions, one level of
# parentheses), so each ends by itself within n_predict.
GRAMMARS = [
    ("yes/no", 'root ::= "yes" | "no"', 8, lambda s: re.fullmatch(r"yes|no", s) is not None),
    ("a list of numbers",
     'root ::= "[" num ("," " "? num){0,4} "]"\nnum ::= "-"? [0-9]{1,3}', 48,
     lambda s: re.fullmatch(r"\[-?[0-9]{1,3}(, ?-?[0-9]{1,3}){0,4}\]", s) is not None),
    ("an arithmetic expression",
     'root ::= expr\n'
     'expr ::= term (("+" | "-") term){0,3}\n'
     'term ::= factor (("*" | "/") factor){0,2}\n'
     'factor ::= num | "(" inner ")"\n'
     'inner ::= num (("+" | "-" | "*" | "/") num){0,2}\n'
     'num ::= [1-9] [0-9]{0,2}', 160, arithmetic_ok),
    ("a date", 'root ::= [0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])', 16,
     lambda s: re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", s) is not None),
    ("a key-value record",
     'root ::= "name: " [A-Za-z]{1,10} "\\n" "age: " [0-9]{1,2} ("\\n" "tags: " tag ("," tag){0,2})?\n'
     'tag ::= [a-z]{1,6}', 80,
     lambda s: re.fullmatch(r"name: [A-Za-z]{1,10}\nage: [0-9]{1,2}(\ntags: [a-z]{1,6}(,[a-z]{1,6}){0,2})?",
                            s) is not None),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--count", type=int, default=100, help="how many schemas (default 100)")
    parser.add_argument("--seed", type=int, default=20260, help="the generator's seed")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    base = args.base_url.rstrip("/")
    rng = random.Random(args.seed)
    gen = Generator(rng)
    print(f"jsonschema {version('jsonschema')} against {base}; {args.count} schemas, seed {args.seed}")

    started = time.time()
    requests, valid, finishes, failures = 0, 0, {}, []
    for i in range(args.count):
        while True:
            schema, bound = gen.schema()
            if bound <= MAX_BUDGET:
                break
        budget = bound + 16
        jsonschema.Draft202012Validator.check_schema(schema)  # the generator's own sanity
        chat = {
            "messages": [{"role": "user", "content": f"Fill in record {i} as JSON."}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": f"record_{i}", "schema": schema, "strict": True}},
            "max_tokens": budget,
            "seed": i,
            **SAMPLING,
        }
        attempts = [("chat", "/v1/chat/completions", chat)]
        if i % 3 == 0:
            attempts.append(("completion", "/completion", {
                "prompt": f"Record {i} as JSON: ", "json_schema": schema, "n_predict": budget,
                "seed": i, **SAMPLING,
            }))
        for kind, path, body in attempts:
            requests += 1
            status, reply = post(base + path, body, args.api_key, args.timeout)
            if status != 200:
                failures.append(f"#{i} {kind}: HTTP {status}: {json.dumps(reply)[:400]}\n    schema {dumps(schema)}")
                finishes[f"{kind}:http{status}"] = finishes.get(f"{kind}:http{status}", 0) + 1
                continue
            if kind == "chat":
                choice = reply["choices"][0]
                content, finish = choice["message"].get("content"), choice.get("finish_reason")
                ended = finish == "stop"
            else:
                content, finish = reply.get("content"), reply.get("stop_type")
                ended = finish == "eos"
            finishes[f"{kind}:{finish}"] = finishes.get(f"{kind}:{finish}", 0) + 1
            problem = validation_error(content, schema)
            if not problem and not ended:
                problem = f"ended with {finish!r} within a budget of {budget} tokens"
            if problem and LONG_DIGITS.search(content or ""):
                problem += " (a number of more than 16 digits: the server does not cap them)"
            if problem:
                failures.append(f"#{i} {kind}: {problem}\n    output {content!r}\n    schema {dumps(schema)}")
            else:
                valid += 1

    grammar_ok = 0
    for name, grammar, n_predict, ok in GRAMMARS:
        for seed in range(4):
            status, reply = post(base + "/completion", {
                "prompt": f"Answer ({name}): ", "grammar": grammar, "n_predict": n_predict,
                "seed": seed,
            }, args.api_key, args.timeout)
            content, stop = reply.get("content"), reply.get("stop_type")
            if status == 200 and isinstance(content, str) and ok(content) and stop == "eos":
                grammar_ok += 1
            else:
                failures.append(f"GBNF {name} (seed {seed}): HTTP {status}, stop_type {stop!r}, "
                                f"output {content!r}: {json.dumps(reply)[:300]}")

    elapsed = time.time() - started
    print(f"schemas: {args.count}; requests: {requests}; valid: {valid}; "
          f"finish reasons: {dict(sorted(finishes.items()))}")
    print(f"GBNF: {grammar_ok}/{len(GRAMMARS) * 4} outputs match their grammar; {elapsed:.1f}s")
    for f in failures:
        print(f"  FAILED {f}")
    check(f"every one of {requests} schema-constrained outputs parses, validates and ends by itself",
          valid == requests, f"{requests - valid} invalid")
    check("every GBNF output matches its grammar", grammar_ok == len(GRAMMARS) * 4,
          f"{len(GRAMMARS) * 4 - grammar_ok} mismatches")
    return report(f" in {elapsed:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
