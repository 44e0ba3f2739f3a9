"""The rule that decides which sentences may become automatic memories (no model, no store):
a question, a sentence about someone else, small talk is never kept, whatever the model says."""

from __future__ import annotations

import json

import pytest

from assistant.prompts import PromptLibrary
from assistant.recall.extract import (
    MAX_FACTS_PER_MESSAGE,
    NOT_ABOUT_THEM,
    QUESTION,
    SMALL_TALK,
    SOMEONE_ELSE,
    ask_model,
    classify_request,
    extract,
    rejection,
    sentences,
)
from tests.auxil.fake_engine import FakeEngine


def always_fact(sentence: str) -> bool:
    return True


@pytest.mark.parametrize("sentence", [
    "I'm a nurse.", "I have two cats and a dog.", "I live in Lyon", "I am allergic to peanuts.",
    "My favorite color is blue.", "Autumn is my favorite season.", "Well, I grew up in Ohio.",
    "I don't eat meat.", "I know three languages.", "I work as a teacher.",
    "My dog is called Rex.", "I have a sister who is a doctor.",
])
def test_statements_about_themselves_are_eligible(sentence: str) -> None:
    assert rejection(sentence) is None


@pytest.mark.parametrize(("sentence", "reason"), [
    ("What's the weather like?", QUESTION),
    ("Do you like jazz", QUESTION),  # no question mark, still a question
    ("I'm a nurse, are you?", QUESTION),
    ("how do I bake bread", QUESTION),
    ("Alice lives in Berlin.", NOT_ABOUT_THEM),
    ("She is allergic to cats.", NOT_ABOUT_THEM),
    ("He's my best friend.", NOT_ABOUT_THEM),
    ("Tom and I went hiking.", NOT_ABOUT_THEM),
    ("Tell me a joke about cats.", NOT_ABOUT_THEM),
    ("The weather is nice here.", NOT_ABOUT_THEM),
    ("You are a helpful assistant.", NOT_ABOUT_THEM),
    ("My sister is a doctor.", SOMEONE_ELSE),
    ("My colleague Tom is vegan.", SOMEONE_ELSE),
    ("my best friend lives in Rome", SOMEONE_ELSE),
    ("Oh, my parents live in Bora Bora.", SOMEONE_ELSE),
    ("I think so too.", SMALL_TALK),
    ("I'm tired today.", SMALL_TALK),
    ("I'm fine, thanks.", SMALL_TALK),
    ("I'll call you later.", SMALL_TALK),
    ("I don't know about that.", SMALL_TALK),
    ("I want you to write a poem.", SMALL_TALK),
])
def test_questions_others_and_small_talk_are_not(sentence: str, reason: str) -> None:
    assert rejection(sentence) == reason


def test_only_eligible_sentences_reach_the_model() -> None:
    asked: list[str] = []

    def classify(sentence: str) -> bool:
        asked.append(sentence)
        return sentence != "I have a cold."

    message = ("Hi there! I'm a vegetarian. My brother is a chef. Can you suggest a dinner? "
               "I have a cold.\nI live in Lyon")
    assert extract(message, classify) == ["I'm a vegetarian.", "I live in Lyon"]
    assert asked == ["I'm a vegetarian.", "I have a cold.", "I live in Lyon"]


def test_at_most_a_few_facts_per_message() -> None:
    message = " ".join(f"I have {n} cats." for n in range(2, 10))
    assert len(extract(message, always_fact)) == MAX_FACTS_PER_MESSAGE


def test_sentences_keep_question_marks() -> None:
    assert sentences("I'm Ada.  Are you a bot?\n\nI like tea; I like jazz") == [
        "I'm Ada.", "Are you a bot?", "I like tea", "I like jazz"]


def test_the_model_is_asked_with_a_grammar_at_temperature_zero(prompts: PromptLibrary) -> None:
    request = classify_request("I'm a nurse.", prompts)
    assert request.temperature == 0.0 and request.json_schema == {"enum": ["fact", "other"]}
    assert request.messages[-1].text == "I'm a nurse." and request.messages[-1].role == "user"
    assert request.messages[0].role == "system"

    engine = FakeEngine(answers=[json.dumps("fact"), json.dumps("other"), "{broken"])
    assert ask_model(engine, prompts, "I'm a nurse.") is True
    assert ask_model(engine, prompts, "I'm a nurse.") is False
    assert ask_model(engine, prompts, "I'm a nurse.") is False  # malformed: not a fact
