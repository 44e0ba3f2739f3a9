"""llama.cpp grammars (GBNF) for replies that must be JSON: OpenAI's tools and response_format.

llama-cpp-python turns a JSON schema into GBNF (``json_schema_to_gbnf``, llama.cpp's own
converter ported: https://github.com/ggml-org/llama.cpp/blob/master/grammars/README.md).
For ``tool_choice="auto"`` the reply is either that JSON or plain text that does not start
with "{"; the text branch costs decode speed, since the grammar then checks every candidate
token of a free text (measured: 60 tokens in 1.18 s instead of 0.68 s, docs/openai-api.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from assistant.errors import SchemaUnsupported

# Plain text: anything whose first character is not "{" (nor blank, so a reply cannot start
# a call after leading spaces). Rule names the schema converter never makes (it names rules
# after properties, which cannot start with "zz-json" and be this long by chance).
_TEXT_RULES = 'root ::= zz-json-reply | zz-plain-text\nzz-plain-text ::= [^{ \\t\\n] [^\\x00]*\n'


# A grammar llama.cpp refuses kills the process: llama-cpp-python adds the sampler
# ``llama_sampler_init_grammar`` returns without checking it, and a NULL sampler segfaults at
# the first token (measured, 0.3.36: {"type": "string", "maxLength": 1300} or an array with
# "maxItems": 1500, both refused by llama.cpp's parser, crashed the worker with SIGSEGV; so
# did {"enum": ["a\"b"]}: the converter leaves the quote's backslash unescaped). So
# every grammar is first parsed by llama.cpp itself (``_check_parses``), where the API checks
# the request's schemas, before anything is queued. That parser recurses once per nested
# group and overflows its stack long before refusing (nesting 100,000 deep: SIGSEGV even with
# 8 MiB); up to 1,000 it parsed and sampled on a 1 MiB thread stack. And a few characters of
# schema ("minItems": 1000000) expand to 17 MB of rules: both are bounded before parsing.
MAX_GROUP_DEPTH = 1000
MAX_GRAMMAR_CHARS = 1 << 20
# The converter writes every count out in full, before the size above can be checked
# ("minItems": 100000000 took 16 s and 5 GB in the converter; 40 properties of "minItems":
# 100000 gave 68 MB of rules): counts are bounded first, each and summed over the schema, a
# pattern's {m,n} quantifiers multiplied together.
MAX_SCHEMA_COUNT = 100_000
_COUNT_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties",
                   "maxProperties", "minContains", "maxContains")
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class SchemaError(SchemaUnsupported):
    """The schema cannot be turned into a grammar (an unsupported keyword, a bad $ref), or its
    grammar is past the bounds above."""


def gbnf(schema: Mapping[str, Any], or_text: bool = False) -> str:
    """The GBNF of JSON matching ``schema`` (or, with ``or_text``, of plain text instead)."""
    try:
        text = json.dumps(schema, sort_keys=False)
    except (RecursionError, ValueError, TypeError) as exc:
        raise SchemaError(f"unsupported JSON schema: {exc}") from exc
    _check_schema(schema)
    return _gbnf(text, or_text)


def _quoted_strings(value: Any) -> bool:
    """Whether ``value`` holds, at any depth, a string with a double quote."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if '"' in item:
                return True
        elif isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _check_schema(node: Any) -> None:
    """Raise SchemaError, before the converter runs, when a count keyword, the product of a
    pattern's quantifiers, or all of them added up are past MAX_SCHEMA_COUNT, or where the
    converter is known to write a grammar llama.cpp refuses: a double quote in an enum or
    const string or in a property name (its literal keeps the quote's backslash unescaped).
    Caught here, llama.cpp never prints the grammar (its parser writes a refused grammar
    whole to stderr)."""
    stack = [node]
    total = 0
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, Mapping):
            continue
        for key, value in item.items():
            if key in _COUNT_KEYWORDS and isinstance(value, (int, float)):
                if value > MAX_SCHEMA_COUNT:
                    raise SchemaError(f"{key} {value} is past this server's limit of "
                                      f"{MAX_SCHEMA_COUNT}")
                total += max(int(value), 0)
            if key == "pattern" and isinstance(value, str):
                product = 1
                for low, high in _QUANTIFIER.findall(value):
                    product *= max(int(low), int(high or 0), 1)
                    if product > MAX_SCHEMA_COUNT:
                        raise SchemaError(f"the pattern's repetition counts multiply to more "
                                          f"than this server's limit of {MAX_SCHEMA_COUNT}")
                total += product
            if total > MAX_SCHEMA_COUNT:
                raise SchemaError(f"the schema's counts (minItems, maxLength, pattern "
                                  f"repetitions...) add up to more than this server's limit "
                                  f"of {MAX_SCHEMA_COUNT}")
            if (key in ("enum", "const") and _quoted_strings(value)) or \
                    (key == "properties" and isinstance(value, Mapping)
                     and any('"' in str(name) for name in value)):
                raise SchemaError(f"a double quote in {key} is not supported here: "
                                  f"llama-cpp-python's schema converter writes it as a grammar "
                                  f"llama.cpp cannot parse")
            if isinstance(value, (Mapping, list)):
                stack.append(value)


@lru_cache(maxsize=64)
def _gbnf(schema_json: str, or_text: bool) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        rules: str = json_schema_to_gbnf(schema_json)
    except Exception as exc:  # the converter raises whatever it meets (KeyError, ValueError...)
        raise SchemaError(f"unsupported JSON schema: {exc}") from exc
    if len(rules) > MAX_GRAMMAR_CHARS:
        raise SchemaError(f"the JSON schema's grammar would hold {len(rules)} characters; the "
                          f"limit is {MAX_GRAMMAR_CHARS} (a smaller minItems, maxItems, "
                          f"minLength or maxLength, or less nesting)")
    depth = group_depth(rules)
    if depth > MAX_GROUP_DEPTH:
        raise SchemaError(f"the JSON schema's grammar would nest {depth} groups; the limit is "
                          f"{MAX_GROUP_DEPTH} (a smaller maxItems or maxLength, or a simpler "
                          f"pattern)")
    if or_text:
        rules = _TEXT_RULES + re.sub(r"^root ::=", "zz-json-reply ::=", rules, count=1,
                                     flags=re.M)
    _check_parses(rules)
    return rules


def _check_parses(rules: str) -> None:
    """Raise SchemaError unless llama.cpp's own grammar parser accepts ``rules`` (no vocabulary
    needed: a converted schema never names tokens)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(None, rules.encode(), b"root")
    if not sampler:
        raise SchemaError("llama.cpp cannot parse the grammar of this JSON schema")
    llama_cpp.llama_sampler_free(sampler)


def group_depth(rules: str) -> int:
    """How deep parenthesised groups nest in GBNF ``rules``: parentheses inside string
    literals ("..."), character classes ([...]) and comments (# ...) do not count."""
    deepest = depth = 0
    quote: str | None = None  # the closing character of the literal or class we are in
    escaped = comment = False
    for char in rules:
        if comment:
            comment = char != "\n"
        elif quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char == '"':
            quote = '"'
        elif char == "[":
            quote = "]"
        elif char == "#":
            comment = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def grammar(schema: Mapping[str, Any], or_text: bool = False) -> Any:
    """A ``llama_cpp.LlamaGrammar`` for ``schema`` (a fresh one: it keeps parse state)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf(schema, or_text), verbose=False)
