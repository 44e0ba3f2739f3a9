"""Automatic extraction: which sentences of a person's message state a lasting fact about them.

Two steps, in this order (docs/memory.md, "Automatic extraction"):

1. ``eligible``: a rule in code, not the model, decides which sentences may be kept at all:
   the person's own statements about themselves. A question, a sentence whose subject is
   someone else ("Alice lives in Berlin", "my sister is a nurse", "she likes tea"), a request,
   a hedge or a passing state ("I think so", "I'm tired today"), a plan ("I'll call later")
   is never kept, whatever the model says. What the tests assert rests on this rule.
2. ``ask_model``: the model (constrained to answer ``"fact"`` or ``"other"``, temperature 0)
   sorts what passed: a lasting fact, or small talk the rule did not know.

The kept text is the person's sentence itself, never the model's words: the model chooses,
it does not write, so it cannot invent a fact or carry an instruction into a memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.engine import Engine, GenerationRequest
from assistant.envelope import ChatMessage
from assistant.prompts import PromptLibrary

# Why a sentence is not kept (the bench counts them; tests name them).
QUESTION = "question"
NOT_ABOUT_THEM = "not_about_them"
SOMEONE_ELSE = "someone_else"
SMALL_TALK = "small_talk"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"

MIN_WORDS = 3
MAX_WORDS = 40
MAX_SENTENCES = 8  # a long message is read this far (each sentence costs a model call)
MAX_FACTS_PER_MESSAGE = 3

_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|\n+|;\s+")
_WORD = re.compile(r"[a-z']+")
_INTERROGATIVES = frozenset(
    "what who whom whose where when why how which do does did is are am was were can could "
    "would will shall should may might have has had isn't aren't don't doesn't didn't "
    "won't wouldn't can't couldn't shouldn't".split())
# Openers a statement may start with before its subject ("Well, I'm a nurse").
_OPENERS = frozenset(
    "well oh so and but also yes yeah yep no nope ok okay actually honestly btw anyway hi "
    "hey hello hmm um uh sure right".split())
_FIRST_PERSON = frozenset("i i'm im i've i'd i'll my".split())
# "my <one of these>" is a sentence about another person (their family, friends, people
# they work with), kept out: automatic memories are facts about the person themselves.
_PEOPLE = frozenset("""
mom mum mother dad father parent parents mommy daddy grandma grandpa grandmother grandfather
grandparents brother brothers sister sisters sibling siblings son sons daughter daughters
kid kids child children baby wife husband spouse partner boyfriend girlfriend fiance fiancee
friend friends bestie colleague colleagues coworker coworkers co-worker boss manager team
neighbor neighbour neighbors neighbours roommate flatmate uncle aunt cousin cousins nephew
niece family teacher doctor students student classmate classmates ex
""".split())
# "<thing> is my favourite <thing>": a fact about them whose subject is not "I".
_FAVOURITE = re.compile(r"\b(?:is|are) my (?:favou?rite|fav|best|least favou?rite)\b")
# Hedges, replies, feelings of the moment, plans and requests: small talk, not facts.
_SMALL_TALK = re.compile(
    r"^(?:i|i'm|im|i am)\s+(?:think|guess|suppose|hope|wonder|wondered|was wondering|see|"
    r"agree|disagree|know (?:what|that|right|you|it|the)|know$|understand|mean|feel like|"
    r"believe|bet|doubt|don't know|do not know|dont know|don't think|am not sure|not sure|"
    r"fine|good|ok|okay|well|great|alright|doing|glad|sorry|sure|afraid|happy to|"
    r"going to|gonna|will|would like|want you|need you|need help|"
    r"just wanted|was just|can't wait|cannot wait|have to go|got to go|gotta|"
    r"love that|like that|love it|like it|love your|like your|love this|like this|"
    r"am glad|am sorry|am fine|am good|am well|am doing|am going|was going)\b"
    r"|^(?:i'll|i'd|ill)\b"
    r"|\b(?:today|tonight|right now|this morning|this afternoon|this evening|at the moment|"
    r"tomorrow|yesterday|later|soon|thanks|thank you)\b")


@dataclass(frozen=True)
class Sentence:
    text: str
    rejected: str | None  # None: eligible (the model decides); else why not


def sentences(message: str) -> list[str]:
    """The message's sentences, in order (a question keeps its question mark)."""
    parts = (p.strip() for p in _SENTENCE_END.split(message))
    return [p for p in parts if p]


def _words(sentence: str) -> list[str]:
    return _WORD.findall(sentence.lower().replace("\u2019", "'"))


def rejection(sentence: str) -> str | None:
    """Why this sentence may not become an automatic memory; None when it may."""
    words = _words(sentence)
    if sentence.rstrip().endswith("?") or (words and words[0] in _INTERROGATIVES):
        return QUESTION
    if len(words) < MIN_WORDS:
        return TOO_SHORT
    if len(words) > MAX_WORDS:
        return TOO_LONG
    start = 0
    while start < len(words) and words[start] in _OPENERS:
        start += 1
    words = words[start:]
    if not words:
        return TOO_SHORT
    lowered = " ".join(words)
    if words[0] == "my":
        if len(words) > 1 and words[1] in _PEOPLE:
            return SOMEONE_ELSE
        if len(words) > 2 and words[1] in {"best", "older", "younger", "little", "big",
                                           "new", "old", "late", "two", "three"} \
                and words[2] in _PEOPLE:
            return SOMEONE_ELSE
    elif words[0] not in _FIRST_PERSON and not _FAVOURITE.search(lowered):
        # The subject is someone or something else: "Alice lives in Berlin", "She's a
        # nurse", "The weather is nice", "Tell me a joke".
        return NOT_ABOUT_THEM
    if _SMALL_TALK.search(lowered):
        return SMALL_TALK
    return None


def screen_sentences(message: str) -> list[Sentence]:
    """Every sentence of the message with the rule's verdict (``MAX_SENTENCES`` at most)."""
    return [Sentence(s, rejection(s)) for s in sentences(message)[:MAX_SENTENCES]]


ANSWER_SCHEMA = {"enum": ["fact", "other"]}
# Few-shot examples, as earlier turns of the prompt (written for this prompt, not taken from
# the measured set, bench/memory_extract.py).
_EXAMPLES = (("I have a dog.", "fact"), ("I'm fine, thanks.", "other"),
             ("I grew up in Ohio.", "fact"), ("I guess that makes sense.", "other"),
             ("I'm a vegetarian.", "fact"), ("I will think about it.", "other"))


def classify_request(sentence: str, prompts: PromptLibrary) -> GenerationRequest:
    messages = [ChatMessage(role="system", text=prompts.render("memory_extract"))]
    for example, label in _EXAMPLES:
        messages.append(ChatMessage(role="user", text=example))
        messages.append(ChatMessage(role="assistant", text=json.dumps(label)))
    messages.append(ChatMessage(role="user", text=sentence))
    return GenerationRequest(messages=tuple(messages), max_tokens=6, temperature=0.0, seed=0,
                             json_schema=ANSWER_SCHEMA)


def ask_model(engine: Engine, prompts: PromptLibrary, sentence: str) -> bool:
    """Does the model call this sentence a lasting fact about the person?"""
    answer = "".join(engine.stream(classify_request(sentence, prompts))).strip()
    try:
        return bool(json.loads(answer) == "fact")
    except ValueError:
        return False  # cut short or malformed: not a fact


Classifier = Callable[[str], bool]


def extract(message: str, classify: Classifier) -> list[str]:
    """The sentences of ``message`` to keep as memories: eligible by the rule, then called a
    fact by ``classify`` (the model); at most ``MAX_FACTS_PER_MESSAGE``."""
    kept: list[str] = []
    for sentence in screen_sentences(message):
        if sentence.rejected is not None:
            continue
        if classify(sentence.text):
            kept.append(sentence.text)
            if len(kept) == MAX_FACTS_PER_MESSAGE:
                break
    return kept


def model_classifier(engine: Engine, prompts: PromptLibrary) -> Classifier:
    return lambda sentence: ask_model(engine, prompts, sentence)


__all__: Sequence[str] = ["Sentence", "extract", "model_classifier", "rejection",
                          "screen_sentences", "sentences"]
