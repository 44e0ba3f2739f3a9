"""Retrieved passages into the prompt, as quoted reference material, never as instructions.

The system prompt gains the rule (``prompts/knowledge_rule.toml``) wherever a collection may
answer, found passages or not, so the prompt's stable beginning stays the same from turn to
turn. The passages go into the newest user message, each fenced in ``<reference>`` tags whose
look-alikes inside a document are defused, within a token budget. What the reply can cite is
numbered as the model saw it: [n] per document section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.envelope import ChatMessage, Citation
from assistant.knowledge.retrieve import Hit
from assistant.prompts import PromptLibrary

_TAG = re.compile(r"<(\s*/?\s*)(reference)", re.IGNORECASE)
_CITED = re.compile(r"\[(\d{1,2})\]")


@dataclass(frozen=True)
class Grounding:
    """What the knowledge base found for a turn: ``hits`` best first (maybe none), and the
    most tokens their passages may take in the prompt."""

    hits: tuple[Hit, ...]
    budget_tokens: int


def defuse(text: str) -> str:
    """A document cannot close its own fence: ``<reference``/``</reference`` lose their ``<``."""
    return _TAG.sub(lambda m: "‹" + m.group(1) + m.group(2), text)


def _attribute(value: str) -> str:
    return defuse(value).replace('"', "'").replace("\n", " ")[:200]


def reference_block(number: int, hit: Hit) -> str:
    chunk = hit.chunk
    section = f' section="{_attribute(chunk.section)}"' if chunk.section else ""
    page = f' page="{chunk.page}"' if chunk.page else ""
    return (f'<reference id="{number}" title="{_attribute(chunk.title)}"{section}{page}>\n'
            f"{defuse(chunk.text)}\n</reference>")


def select(hits: Sequence[Hit], budget_tokens: int, count_tokens: Callable[[str], int]
           ) -> tuple[list[str], list[Citation]]:
    """The passages that fit the budget (best first; one that does not fit is skipped for a
    smaller one), and one citation per document section they come from."""
    numbers: dict[tuple[int, str], int] = {}
    citations: list[Citation] = []
    blocks: list[str] = []
    used = 0
    for hit in hits:
        key = (hit.chunk.document_id, hit.chunk.section)
        number = numbers.get(key, len(numbers) + 1)
        block = reference_block(number, hit)
        cost = count_tokens(block)
        if used + cost > budget_tokens:
            continue
        used += cost
        blocks.append(block)
        if key not in numbers:
            numbers[key] = number
            citations.append(Citation(number=number, title=hit.chunk.title,
                                      section=hit.chunk.section, source=hit.chunk.source,
                                      page=hit.chunk.page))
    return blocks, citations


def with_references(messages: Sequence[ChatMessage], grounding: Grounding,
                    prompts: PromptLibrary, count_tokens: Callable[[str], int],
                    room_tokens: int) -> tuple[tuple[ChatMessage, ...], tuple[Citation, ...]]:
    """``messages`` with the rule in the system message and the passages in the last user
    message; ``room_tokens`` caps the budget by what the context has left."""
    out = list(messages)
    rule = prompts.render("knowledge_rule").strip()
    if out and out[0].role == "system":
        out[0] = out[0].model_copy(update={"text": f"{out[0].text}\n\n{rule}"})
    else:
        out.insert(0, ChatMessage(role="system", text=rule))
    budget = min(grounding.budget_tokens, room_tokens - count_tokens(rule))
    blocks, citations = select(grounding.hits, budget, count_tokens)
    if not blocks or out[-1].role != "user":
        return tuple(out), ()
    last = out[-1]
    out[-1] = last.model_copy(update={"text": prompts.render(
        "knowledge_references", references="\n".join(blocks), question=last.text).strip()})
    return tuple(out), tuple(citations)


def cited(text: str, citations: Sequence[Citation]) -> tuple[Citation, ...]:
    """The citations a reply used: those it marked [n], or all it was given if it marked
    none (a small model rarely writes the marks)."""
    marked = {int(n) for n in _CITED.findall(text)}
    chosen = tuple(c for c in citations if c.number in marked)
    return chosen or tuple(citations)
