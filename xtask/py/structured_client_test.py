#!/usr/bin/env python3
"""Drive a bitnet-server's structured outputs and tool calls with the `openai` client and LangChain.

Usage: structured_client_test.py BASE_URL [--api-key KEY] [--timeout SECONDS] [--prompts N]

BASE_URL is the server root (e.g. http://127.0.0.1:8080; the script appends /v1). The server
must run a generation model with at least 3 sequence slots (`--parallel 3`, for `n=3`). It is
meant for a SYNTHETIC model whose weights are random: the model writes noise, so every valid
reply below is valid only because the server's grammar constraint made it so. Checks:

  - `client.chat.completions.parse(response_format=<Pydantic model>)` on N (default 50) varied
    prompts over seven models (nested objects, `$ref`s, lists with a maximum length, Literal and
    Enum, Optional, bounded ints, floats, bools, strings with a maximum length): every reply is
    parsed into an instance and its JSON validates against the schema that was sent (jsonschema);
    `.stream(response_format=...)` gives the parsed object too;
  - `response_format={"type": "json_object"}` returns a JSON object (or, when it runs out of
    tokens, a valid beginning of one with finish_reason "length");
  - tool calls, non-streamed and streamed: `tool_choice` "required" and a named function give
    finish_reason "tool_calls" and arguments that parse and validate against the function's
    parameters; the round trip (assistant `tool_calls` + a `tool` message → a final answer);
    deltas accumulated by index as OpenAI's function-calling guide shows; the `.parse` and
    `.stream` helpers with `openai.pydantic_function_tool`; `parallel_tool_calls` with two tools;
  - `n=3`: three choices with indexes 0..2, streamed and not, and three parsed objects;
  - langchain-openai `ChatOpenAI.with_structured_output` (the default method, "json_schema" and
    "function_calling") returns schema instances; `bind_tools(...)` with a required tool returns
    `tool_calls` with arguments that validate;
  - bad input surfaces as `openai.BadRequestError` naming the problem: an invalid schema, an
    unsupported keyword, a tool whose parameters are not an object schema, a `tool_choice`
    naming an unknown tool, `n=0`, `n` above the server's slots.

Exit status 0 when every check passes; 1 with a list of failures otherwise.
"""

import argparse
import enum
import json
import sys
import time
from importlib.metadata import version
from typing import Annotated, List, Literal, Optional

try:
    import jsonschema
    import openai
    from pydantic import BaseModel, Field
except ImportError as exc:  # pragma: no cover - environment problem, reported clearly
    sys.exit(f"a required package is missing ({exc}): pip install openai jsonschema")

from client_checks import check, report, run

# Every string and list below has a maximum length. On random weights a string without
# `maxLength` only ends when the model happens to sample the closing quote (one token in
# hundreds), so it can run until max_tokens, which the server then reports as finish_reason
# "length" (and `.parse` raises LengthFinishReasonError): a failure of the test, not of the
# server. Integers have bounds for the same reason (their digits would be unbounded too). A
# float's digits cannot be bounded by JSON Schema at all: the server must cap them (as
# llama.cpp's JSON grammars do, 16 digits per part), else random weights often write digits
# until max_tokens. The requests send what applications send: no sampling settings.
MAX_TOKENS = 800


def text(n):
    """A string of at most `n` characters."""
    return Annotated[str, Field(max_length=n)]


class Person(BaseModel):
    name: text(24)
    age: int = Field(ge=0, le=120)
    email: Optional[text(40)] = None
    tags: List[text(12)] = Field(max_length=3)


class Address(BaseModel):
    street: text(30)
    city: text(20)
    postcode: str = Field(pattern=r"^[0-9]{5}$")


class Contact(BaseModel):
    name: text(24)
    address: Address
    phones: List[text(15)] = Field(max_length=2)


class EntityKind(str, enum.Enum):
    person = "person"
    organization = "organization"
    place = "place"


class Entity(BaseModel):
    name: text(20)
    kind: EntityKind


class Relation(BaseModel):
    source: text(20)
    target: text(20)
    kind: Literal["works_for", "located_in", "knows"]


class Graph(BaseModel):
    """Entities and relations for a knowledge graph (what GraphRAG extractors ask for)."""

    entities: List[Entity] = Field(max_length=4)
    relations: List[Relation] = Field(max_length=3)


class Sentiment(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)
    sarcastic: bool


class Ingredient(BaseModel):
    item: text(20)
    grams: float = Field(ge=0, le=1000)


class Recipe(BaseModel):
    title: text(30)
    servings: int = Field(ge=1, le=12)
    ingredients: List[Ingredient] = Field(min_length=1, max_length=4)
    vegetarian: bool


class Month(str, enum.Enum):
    jan = "jan"
    feb = "feb"
    mar = "mar"
    apr = "apr"
    may = "may"
    jun = "jun"


class Event(BaseModel):
    title: text(30)
    day: int = Field(ge=1, le=31)
    month: Month
    attendees: Optional[List[text(16)]] = Field(default=None, max_length=3)
    priority: Optional[int] = Field(default=None, ge=1, le=5)


class Step(BaseModel):
    tool: Literal["search", "lookup", "answer"]
    input: text(40)


class QueryPlan(BaseModel):
    """A query plan (what agent planners ask for)."""

    steps: List[Step] = Field(min_length=1, max_length=3)
    done: bool


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: text(20)
    unit: Literal["c", "f"]


PROMPTS = [
    (Person, "Extract the person: Ada Lovelace, 36, ada@example.com, mathematician."),
    (Person, "Who is this? 'Grace Hopper (85) invented the first compiler.'"),
    (Person, "Parse: name=Alan Turing; age=41; tags=logic,computing"),
    (Person, "A customer called: Maria, about thirty, no email given."),
    (Person, "Profile: Linus, 54, linus@example.org, kernel, git"),
    (Person, "Make up a fictional person and describe them."),
    (Person, "Extract: 'Bob is 7 years old and loves trains.'"),
    (Contact, "Contact card: Jane Doe, 12 Main Street, Springfield 12345, phone 555-0100."),
    (Contact, "Save: Max Mustermann, Hauptstrasse 5, 10115 Berlin, +49 30 1234567."),
    (Contact, "Who should the parcel go to? Ana, Rua Augusta 20, Lisbon 11000."),
    (Contact, "Extract the address from: 'Ship to Li Wei, 88 Nanjing Road, Shanghai 20000.'"),
    (Contact, "New lead: Omar, 1 Market St, San Francisco 94105, two phones."),
    (Contact, "Invent a contact with an address."),
    (Contact, "Parse the signature: 'Kind regards, Sven. Storgatan 3, 11122 Stockholm.'"),
    (Graph, "Alice works for Acme Corp in Paris. Bob knows Alice."),
    (Graph, "Extract entities and relations: Marie Curie worked at the University of Paris."),
    (Graph, "Neo4j is a graph database company located in Malmo."),
    (Graph, "Text: 'Tim Cook leads Apple, which is based in Cupertino.'"),
    (Graph, "Build a small knowledge graph about the Rhine and the cities along it."),
    (Graph, "Who knows whom? Ann knows Ben, Ben knows Cat, Cat works for Dell."),
    (Graph, "Extract nothing if there is nothing: 'The weather was nice.'"),
    (Sentiment, "Classify: 'I love this phone, best purchase ever!'"),
    (Sentiment, "Classify: 'Terrible service. Never again.'"),
    (Sentiment, "Classify: 'Oh great, another Monday meeting.'"),
    (Sentiment, "Classify: 'The package arrived on Tuesday.'"),
    (Sentiment, "Sentiment of: 'Not bad at all, honestly.'"),
    (Sentiment, "Rate the tone of: 'Wow. Just wow. What a disaster.'"),
    (Sentiment, "How does this review feel? 'Five stars, would buy again.'"),
    (Recipe, "Give me a pancake recipe."),
    (Recipe, "Recipe for a tomato salad for two."),
    (Recipe, "How do I make guacamole?"),
    (Recipe, "A vegetarian chili for six people."),
    (Recipe, "Extract the recipe: 200 g flour, 2 eggs, 300 ml milk. Serves 4."),
    (Recipe, "Something quick with rice and beans."),
    (Recipe, "Bake bread: 500 g flour, 10 g salt, 7 g yeast, 350 g water."),
    (Event, "Schedule: team offsite on March 14, Ana and Ben attend, high priority."),
    (Event, "Dentist appointment on the 3rd of June."),
    (Event, "Parse the invite: 'Release party, Feb 28, everyone welcome.'"),
    (Event, "Add to calendar: quarterly review, April 1, priority 2."),
    (Event, "Birthday dinner for Sam on May 20 with Kim and Lee."),
    (Event, "Extract the event from: 'Kickoff meeting January 9.'"),
    (Event, "Plan a hackathon for early March."),
    (QueryPlan, "Plan how to answer: who founded the company that makes the iPhone?"),
    (QueryPlan, "Plan: find the population of the largest city in Canada."),
    (QueryPlan, "Break down: compare BitNet b1.58 with a float16 model."),
    (QueryPlan, "Plan a search for the release date of Rust 1.0."),
    (QueryPlan, "How would you look up the weather in Oslo and then answer?"),
    (QueryPlan, "Plan the steps to summarise a document about graph databases."),
    (QueryPlan, "Answer directly: what is two plus two?"),
    (QueryPlan, "Plan: which rivers flow through Germany?"),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}

TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "zone": {"type": "string", "enum": ["UTC", "CET", "PST"]},
                "hour24": {"type": "boolean"},
            },
            "required": ["zone", "hour24"],
            "additionalProperties": False,
        },
    },
}

TOOLS = {t["function"]["name"]: t for t in (WEATHER_TOOL, TIME_TOOL)}


def strict_schema(model_cls):
    """The JSON Schema `.parse` sends for `model_cls` (the client's strict form of Pydantic's)."""
    from openai.lib._pydantic import to_strict_json_schema

    return to_strict_json_schema(model_cls)


def schema_errors(instance, schema):
    """Every jsonschema violation of `instance`, as text ("" when valid)."""
    validator = jsonschema.Draft202012Validator(schema)
    return "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance))


def json_object_prefix_ok(s):
    """True when `s` is a JSON object or the beginning of one (what a reply cut off by
    max_tokens under {"type": "json_object"} must be)."""
    pos = 0
    n = len(s)

    class End(Exception):
        pass

    def peek():
        if pos >= n:
            raise End
        return s[pos]

    def eat(expected):
        nonlocal pos
        for ch in expected:
            if pos >= n:
                raise End
            if s[pos] != ch:
                raise ValueError(f"expected {ch!r} at {pos}, got {s[pos]!r}")
            pos += 1

    def ws():
        nonlocal pos
        while pos < n and s[pos] in " \t\r\n":
            pos += 1

    def string():
        nonlocal pos
        eat('"')
        while True:
            c = peek()
            pos += 1
            if c == '"':
                return
            if c == "\\":
                e = peek()
                pos += 1
                if e == "u":
                    for _ in range(4):
                        if peek() not in "0123456789abcdefABCDEF":
                            raise ValueError(f"bad \\u escape at {pos}")
                        pos += 1
                elif e not in '"\\/bfnrt':
                    raise ValueError(f"bad escape at {pos}")
            elif ord(c) < 0x20:
                raise ValueError(f"control character in a string at {pos}")

    def number():
        nonlocal pos
        start = pos
        while pos < n and s[pos] in "+-0123456789.eE":
            pos += 1
        if pos >= n:
            raise End
        try:
            float(s[start:pos])
        except ValueError:
            raise ValueError(f"bad number {s[start:pos]!r}") from None

    def value():
        ws()
        c = peek()
        if c == "{":
            obj()
        elif c == "[":
            arr()
        elif c == '"':
            string()
        elif c in "-0123456789":
            number()
        else:
            for word in ("true", "false", "null"):
                if c == word[0]:
                    eat(word)
                    return
            raise ValueError(f"unexpected {c!r} at {pos}")

    def obj():
        eat("{")
        ws()
        if peek() == "}":
            eat("}")
            return
        while True:
            ws()
            string()
            ws()
            eat(":")
            value()
            ws()
            if peek() == ",":
                eat(",")
                continue
            eat("}")
            return

    def arr():
        eat("[")
        ws()
        if peek() == "]":
            eat("]")
            return
        while True:
            value()
            ws()
            if peek() == ",":
                eat(",")
                continue
            eat("]")
            return

    try:
        ws()
        if peek() != "{":
            return False
        obj()
        ws()
        return pos == n
    except End:
        return True
    except ValueError:
        return False


def expect_bad_request(name, fn, needle=None, param=None):
    """The call must raise BadRequestError whose message contains `needle` and/or whose
    `param` is `param`."""
    try:
        fn()
    except openai.BadRequestError as exc:
        ok = (needle is None or needle in str(exc)) and (param is None or exc.param == param)
        check(name, ok, f"param {exc.param!r}, message {exc}; wanted {needle!r} / {param!r}")
        return
    except Exception as exc:
        check(name, False, f"expected BadRequestError, got {type(exc).__name__}: {exc}")
        return
    check(name, False, "the request was accepted")


def check_call(label, call, allowed):
    """One tool call (an SDK object): a function call with an id, a known name and arguments
    that parse to an object valid against that function's parameters. Returns the arguments."""
    check(f"{label}: a function call with an id", call.type == "function" and isinstance(call.id, str)
          and len(call.id) > 0, str(call))
    name = call.function.name
    check(f"{label}: names one of the tools", name in allowed, f"{name!r} not in {sorted(allowed)}")
    try:
        args = json.loads(call.function.arguments)
    except (TypeError, ValueError) as exc:
        check(f"{label}: arguments are JSON", False, f"{call.function.arguments!r}: {exc}")
        return None
    check(f"{label}: arguments are an object", isinstance(args, dict), repr(args))
    if name in TOOLS:
        errors = schema_errors(args, TOOLS[name]["function"]["parameters"])
        check(f"{label}: arguments match the parameters", not errors, f"{args}: {errors}")
    return args


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("--api-key", default="not-needed")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS),
                        help=f"how many of the {len(PROMPTS)} parse prompts to run")
    args = parser.parse_args()

    base = args.base_url.rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base, api_key=args.api_key, timeout=args.timeout, max_retries=0)
    model = client.models.list().data[0].id
    print(f"openai {openai.__version__}, jsonschema {version('jsonschema')} against {args.base_url}")
    system = {"role": "system", "content": "Reply with JSON only."}

    def parse_many():
        misses, finishes = [], {}
        cases = PROMPTS[:args.prompts]
        for i, (cls, prompt) in enumerate(cases):
            try:
                r = client.chat.completions.parse(
                    model=model, messages=[system, {"role": "user", "content": prompt}],
                    response_format=cls, max_tokens=MAX_TOKENS, seed=i,
                )
            except Exception as exc:  # LengthFinishReasonError, ValidationError, API errors
                misses.append(f"#{i} {cls.__name__}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            choice = r.choices[0]
            finishes[choice.finish_reason] = finishes.get(choice.finish_reason, 0) + 1
            msg = choice.message
            if not isinstance(msg.parsed, cls):
                misses.append(f"#{i} {cls.__name__}: parsed is {type(msg.parsed).__name__}: {msg.content!r}")
                continue
            errors = schema_errors(json.loads(msg.content), strict_schema(cls))
            if errors:
                misses.append(f"#{i} {cls.__name__}: {msg.content!r}: {errors}")
            elif choice.finish_reason != "stop":
                misses.append(f"#{i} {cls.__name__}: finish_reason {choice.finish_reason!r}")
        print(f"parse: {len(cases) - len(misses)}/{len(cases)} parsed; finish reasons {finishes}")
        for m in misses:
            print(f"  miss {m}")
        check(f"parse: all {len(cases)} replies parsed into their Pydantic model and valid",
              not misses and len(cases) == args.prompts, f"{len(misses)} misses")

    def stream_parse():
        with client.chat.completions.stream(
            model=model, messages=[system, {"role": "user", "content": "Classify: 'fine, I guess'"}],
            response_format=Sentiment, max_tokens=MAX_TOKENS, seed=7,
        ) as stream:
            done = [e for e in stream if e.type == "content.done"]
            final = stream.get_final_completion()
        check("stream(response_format): a content.done event with the parsed object",
              len(done) == 1 and isinstance(done[0].parsed, Sentiment), str(done))
        check("stream(response_format): the final completion is parsed",
              isinstance(final.choices[0].message.parsed, Sentiment)
              and final.choices[0].finish_reason == "stop", str(final))

    def json_object():
        outcomes = []
        for seed in range(4):
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                response_format={"type": "json_object"}, max_tokens=256, seed=seed,
            )
            choice = r.choices[0]
            content = choice.message.content
            outcomes.append(choice.finish_reason)
            if choice.finish_reason == "stop":
                try:
                    value = json.loads(content)
                except ValueError as exc:
                    check("json_object: a finished reply is JSON", False, f"{content!r}: {exc}")
                    continue
                check("json_object: a finished reply is a JSON object", isinstance(value, dict), repr(content))
            else:
                check("json_object: a reply cut by max_tokens says length and is a valid start of an object",
                      choice.finish_reason == "length" and json_object_prefix_ok(content),
                      f"{choice.finish_reason}: {content!r}")
        print(f"json_object: finish reasons {outcomes}")

    def tool_required():
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        r = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
            parallel_tool_calls=False, max_tokens=MAX_TOKENS, seed=1,
        )
        choice = r.choices[0]
        check("tools required: finish_reason tool_calls", choice.finish_reason == "tool_calls",
              str(choice.finish_reason))
        calls = choice.message.tool_calls or []
        check("tools required: exactly one call (parallel_tool_calls=False)", len(calls) == 1, str(calls))
        check("tools required: no text content", not choice.message.content, repr(choice.message.content))
        if not calls:
            return
        call = calls[0]
        check_call("tools required", call, {"get_weather"})

        # The round trip: the assistant's call and the tool's result go back; the model answers.
        follow = messages + [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 degrees C, sunny"},
        ]
        final = client.chat.completions.create(
            model=model, messages=follow, tools=[WEATHER_TOOL], tool_choice="none",
            max_tokens=32, seed=2,
        )
        fc = final.choices[0]
        check("round trip (tool_choice none): a text answer",
              isinstance(fc.message.content, str) and fc.finish_reason in ("stop", "length")
              and not fc.message.tool_calls, str(fc))
        auto = client.chat.completions.create(
            model=model, messages=follow, tools=[WEATHER_TOOL], tool_choice="auto",
            parallel_tool_calls=False, max_tokens=MAX_TOKENS, seed=3,
        )
        ac = auto.choices[0]
        if ac.finish_reason == "tool_calls":
            check("round trip (auto): another call is well formed", len(ac.message.tool_calls or []) == 1,
                  str(ac))
            for c in ac.message.tool_calls or []:
                check_call("round trip (auto)", c, {"get_weather"})
        else:
            check("round trip (auto): a text answer",
                  isinstance(ac.message.content, str) and ac.finish_reason in ("stop", "length")
                  and not ac.message.tool_calls, str(ac))

    def tool_named():
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "What time is it in Berlin?"}],
            tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            max_tokens=MAX_TOKENS, seed=4,
        )
        choice = r.choices[0]
        calls = choice.message.tool_calls or []
        check("tools named: finish_reason tool_calls and one call", choice.finish_reason == "tool_calls"
              and len(calls) == 1, str(choice))
        if calls:
            check("tools named: the named function", calls[0].function.name == "get_time",
                  calls[0].function.name)
            check_call("tools named", calls[0], {"get_time"})

    def tool_stream():
        messages = [{"role": "user", "content": "Weather in Rome, please."}]
        stream = client.chat.completions.create(
            model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
            parallel_tool_calls=False, max_tokens=MAX_TOKENS, seed=5, stream=True,
        )
        # OpenAI's function-calling guide, "Streaming": accumulate the deltas by index; the
        # first delta of a call carries its id, type, name and arguments "" (else this pattern
        # would count the first piece twice), later ones only pieces of the arguments.
        final_tool_calls = {}
        # The same, independently: every delta's fields, in order.
        seen = {}
        finish, chunks = None, 0
        for chunk in stream:
            chunks += 1
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for tool_call in delta.tool_calls or []:
                index = tool_call.index
                if index not in final_tool_calls:
                    final_tool_calls[index] = tool_call
                    seen[index] = {"id": tool_call.id, "name": tool_call.function.name,
                                   "type": tool_call.type, "args": ""}
                final_tool_calls[index].function.arguments += tool_call.function.arguments
                seen[index]["args"] += tool_call.function.arguments or ""
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        check("tools stream: finish_reason tool_calls", finish == "tool_calls", str(finish))
        check("tools stream: one call at index 0", sorted(final_tool_calls) == [0], str(final_tool_calls))
        check("tools stream: the arguments arrive in pieces", chunks >= 3, f"{chunks} chunks")
        for index, call in final_tool_calls.items():
            s = seen[index]
            check("tools stream: the first delta has id, type and name",
                  bool(s["id"]) and s["type"] == "function" and s["name"] == "get_weather", str(s))
            check("tools stream: the guide's accumulation gives the arguments",
                  call.function.arguments == s["args"],
                  f"{call.function.arguments!r} vs {s['args']!r}")
            check_call("tools stream", call, {"get_weather"})

        # The round trip, streamed.
        follow = messages + [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": c["id"], "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            } for c in seen.values()]},
            *({"role": "tool", "tool_call_id": c["id"], "content": "25 degrees C"} for c in seen.values()),
        ]
        text, finish = "", None
        for chunk in client.chat.completions.create(
            model=model, messages=follow, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=32,
            seed=6, stream=True,
        ):
            for c in chunk.choices:
                text += c.delta.content or ""
                check("round trip stream: no tool calls under tool_choice none", not c.delta.tool_calls,
                      str(c.delta))
                finish = c.finish_reason or finish
        check("round trip stream: a text answer", finish in ("stop", "length"), f"{finish}: {text!r}")

    def tool_helpers():
        tool = openai.pydantic_function_tool(GetWeather, name="get_weather")
        r = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "Weather in Oslo in fahrenheit?"}],
            tools=[tool], tool_choice="required", parallel_tool_calls=False, max_tokens=MAX_TOKENS,
            seed=8,
        )
        calls = r.choices[0].message.tool_calls or []
        check("parse(tools): parsed_arguments is the Pydantic model",
              len(calls) == 1 and isinstance(calls[0].function.parsed_arguments, GetWeather), str(r))
        with client.chat.completions.stream(
            model=model, messages=[{"role": "user", "content": "Weather in Lima?"}],
            tools=[tool], tool_choice="required", parallel_tool_calls=False, max_tokens=MAX_TOKENS,
            seed=9,
        ) as stream:
            done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
            final = stream.get_final_completion()
        check("stream(tools): an arguments.done event with parsed arguments",
              len(done) == 1 and done[0].name == "get_weather"
              and isinstance(done[0].parsed_arguments, GetWeather), str(done))
        fcalls = final.choices[0].message.tool_calls or []
        check("stream(tools): the final completion's call is parsed",
              final.choices[0].finish_reason == "tool_calls" and len(fcalls) == 1
              and isinstance(fcalls[0].function.parsed_arguments, GetWeather), str(final))

    def tool_parallel():
        counts = []
        for seed in range(3):
            r = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Weather and time in Tokyo and in Lima?"}],
                tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", parallel_tool_calls=True,
                max_tokens=2000, seed=seed,
            )
            choice = r.choices[0]
            calls = choice.message.tool_calls or []
            counts.append(len(calls))
            check("parallel: finish_reason tool_calls with calls", choice.finish_reason == "tool_calls"
                  and len(calls) >= 1, str(choice))
            check("parallel: the call ids are distinct", len({c.id for c in calls}) == len(calls),
                  str([c.id for c in calls]))
            for c in calls:
                check_call("parallel", c, set(TOOLS))
        print(f"parallel_tool_calls: {counts} calls per reply")

    def n_choices():
        msgs = [{"role": "user", "content": "Say something."}]
        r = client.chat.completions.create(model=model, messages=msgs, n=3, max_tokens=8, seed=11)
        check("n=3: three choices, indexes 0..2", sorted(c.index for c in r.choices) == [0, 1, 2],
              str([c.index for c in r.choices]))
        check("n=3: each a text with a finish reason",
              all(isinstance(c.message.content, str) and c.finish_reason in ("stop", "length")
                  for c in r.choices), str(r.choices))
        check("n=3: usage counts every choice's tokens",
              r.usage.completion_tokens >= 3 and r.usage.total_tokens
              == r.usage.prompt_tokens + r.usage.completion_tokens, str(r.usage))

        texts, finishes = {}, {}
        for chunk in client.chat.completions.create(model=model, messages=msgs, n=3, max_tokens=8,
                                                    seed=12, stream=True):
            for c in chunk.choices:
                texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
                if c.finish_reason:
                    finishes[c.index] = c.finish_reason
        check("n=3 stream: deltas for indexes 0..2", sorted(texts) == [0, 1, 2], str(sorted(texts)))
        check("n=3 stream: each index finishes once", sorted(finishes) == [0, 1, 2]
              and all(f in ("stop", "length") for f in finishes.values()), str(finishes))

        p = client.chat.completions.parse(
            model=model, messages=[system, {"role": "user", "content": "Classify: 'meh'"}],
            response_format=Sentiment, n=3, max_tokens=MAX_TOKENS, seed=13,
        )
        check("n=3 parse: three parsed objects",
              sorted(c.index for c in p.choices) == [0, 1, 2]
              and all(isinstance(c.message.parsed, Sentiment) for c in p.choices), str(p.choices))

    def langchain():
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(base_url=base, api_key=args.api_key, model=model, max_tokens=MAX_TOKENS,
                         timeout=args.timeout, max_retries=0)
        # In langchain-openai 1.8.1 the default method is "json_schema" (response_format with
        # the Pydantic class, sent through the openai client's parse, which makes the schema
        # strict: additionalProperties false everywhere); "function_calling" binds the schema as
        # the one tool, named in tool_choice, with parallel_tool_calls false, and sends
        # Pydantic's schema as it is, WITHOUT additionalProperties, unless strict=True. An
        # object schema without additionalProperties allows any other key by the JSON Schema
        # spec; llama.cpp's grammars allow none unless the schema says so, and so must this
        # server, or random weights add keys with unbounded values until max_tokens.
        for method, strict in ((None, None), ("json_schema", None), ("function_calling", None),
                               ("function_calling", True)):
            for cls, prompt in ((Person, "Extract: Ada, 36."), (Contact, "Jane, 1 Main St, Springfield 12345."),
                                (Graph, "Alice works for Acme in Paris.")):
                kwargs = {} if method is None else {"method": method}
                if strict is not None:
                    kwargs["strict"] = strict
                out = llm.with_structured_output(cls, **kwargs).invoke(prompt)
                check(f"langchain with_structured_output({cls.__name__}, {kwargs}): an instance",
                      isinstance(out, cls), repr(out))

        for strict in (None, True):
            bound = llm.bind_tools([GetWeather], tool_choice="required", parallel_tool_calls=False,
                                   strict=strict)
            msg = bound.invoke("What's the weather in Paris?")
            label = f"langchain bind_tools(strict={strict})"
            check(f"{label}: one tool call", len(msg.tool_calls) == 1,
                  f"{msg.tool_calls}; invalid: {msg.invalid_tool_calls}; {msg.response_metadata}")
            for call in msg.tool_calls:
                check(f"{label}: the tool and an id", call["name"] == "GetWeather" and call["id"], str(call))
                try:
                    GetWeather.model_validate(call["args"])
                    check(f"{label}: args validate", True)
                except Exception as exc:
                    check(f"{label}: args validate", False, f"{call['args']}: {exc}")

        many = ChatOpenAI(base_url=base, api_key=args.api_key, model=model, max_tokens=2000,
                          timeout=args.timeout, max_retries=0).bind_tools([WEATHER_TOOL, TIME_TOOL],
                                                                         tool_choice="any")
        msg = many.invoke("Weather and time in Tokyo?")
        check("langchain bind_tools (any, parallel): calls", len(msg.tool_calls) >= 1, str(msg))
        for call in msg.tool_calls:
            errors = (schema_errors(call["args"], TOOLS[call["name"]]["function"]["parameters"])
                      if call["name"] in TOOLS else f"unknown tool {call['name']!r}")
            check("langchain bind_tools (any, parallel): each call valid for its tool", not errors,
                  f"{call}: {errors}")

    def bad_input():
        msgs = [{"role": "user", "content": "hi"}]

        def schema(s):
            return {"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": True}}

        expect_bad_request(
            "bad: an invalid schema is a 400 naming it",
            lambda: client.chat.completions.create(model=model, messages=msgs, max_tokens=4,
                                                   response_format=schema({"type": "bogus"})),
            needle="bogus")
        expect_bad_request(
            "bad: an unsupported keyword is a 400 naming it",
            lambda: client.chat.completions.create(
                model=model, messages=msgs, max_tokens=4,
                response_format=schema({"type": "array", "items": {"type": "integer"}, "uniqueItems": True})),
            needle="uniqueItems")
        expect_bad_request(
            "bad: a tool whose parameters are not an object schema is a 400",
            lambda: client.chat.completions.create(
                model=model, messages=msgs, max_tokens=4,
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
            needle="parameters")
        expect_bad_request(
            "bad: tool_choice naming an unknown tool is a 400 naming it",
            lambda: client.chat.completions.create(
                model=model, messages=msgs, max_tokens=4, tools=[WEATHER_TOOL],
                tool_choice={"type": "function", "function": {"name": "no_such_tool"}}),
            needle="no_such_tool")
        expect_bad_request(
            "bad: n=0 is a 400 on n",
            lambda: client.chat.completions.create(model=model, messages=msgs, max_tokens=4, n=0),
            param="n")
        expect_bad_request(
            "bad: n above the server's slots is a 400 naming --parallel",
            lambda: client.chat.completions.create(model=model, messages=msgs, max_tokens=4, n=100),
            needle="--parallel", param="n")
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=2)
        check("bad: the server still answers", isinstance(r.choices[0].message.content, str), str(r))

    started = time.time()
    for name, fn in [
        ("parse", parse_many),
        ("stream with response_format", stream_parse),
        ("json_object", json_object),
        ("tool_choice required + round trip", tool_required),
        ("tool_choice named", tool_named),
        ("tool calls streamed + round trip", tool_stream),
        ("parse/stream helpers with tools", tool_helpers),
        ("parallel tool calls", tool_parallel),
        ("n=3", n_choices),
        ("langchain-openai", langchain),
        ("bad input", bad_input),
    ]:
        t = time.time()
        run(name, fn)
        print(f"  ({name}: {time.time() - t:.1f}s)")
    return report(f" in {time.time() - started:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
