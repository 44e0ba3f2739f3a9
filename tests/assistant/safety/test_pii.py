"""PII: each kind masked with its placeholder, near-misses left alone, excerpts redacted."""

from __future__ import annotations

import pytest

from assistant.safety.checks.normalise import make_subject
from assistant.safety.checks.pii import Pii, iban_valid, luhn_valid
from assistant.safety.verdict import Action, Category


def masked(text: str, **options: object) -> str | None:
    verdict = Pii(**options).inspect(make_subject(text, "input"))  # type: ignore[arg-type]
    return verdict.masked if verdict.action is Action.MASK else None


@pytest.mark.parametrize(("text", "expected"), [
    ("write to jane.doe+news@example.co.uk today", "write to [email] today"),
    ("card 4111 1111 1111 1111 exp 12/27", "card [card] exp 12/27"),
    ("card 4111-1111-1111-1111", "card [card]"),
    ("amex 378282246310005", "amex [card]"),
    ("card ４１１１ １１１１ １１１１ １１１１", "card [card]"),  # fullwidth digits
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [iban] please"),
    ("iban GB82WEST12345698765432", "iban [iban]"),
    ("call me on +44 20 7946 0958", "call me on [phone]"),
    ("my number is (555) 123-4567", "my number is [phone]"),
    ("+1-202-555-0143", "[phone]"),
    ("06 12 34 56 78", "[phone]"),
    ("phone: 5551234567", "phone: [phone]"),
    ("server at 192.168.10.20 is down", "server at [ip] is down"),
    ("ping 2001:db8::8a2e:370:7334 now", "ping [ip] now"),
    ("key AKIAIOSFODNN7EXAMPLE", "key [secret]"),
    ("token ghp_" + "a1B2" * 9, "token [secret]"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[secret]"),
    ("xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp", "[secret]"),
    ("OPENAI_KEY sk-proj-abcdefghijklmnopqrstuvwx1234", "OPENAI_KEY [secret]"),
    ("AIzaSyA" + "b" * 32, "[secret]"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3",
     "Bearer [secret]"),
    ("api_key=9f86d081884c7d659a2feaa0c55ad015", "api_key=[secret]"),
    ("password: hunter22", "password: [secret]"),
])
def test_each_kind_is_masked_with_its_placeholder(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112",  # fails Luhn
    "order 1234567812345670 shipped",  # Luhn-valid, but no card network starts with 1
    "IBAN DE89 3704 0044 0532 0130 01",  # wrong check digits
    "Python 3.12.1 and version 1.2.3.4",  # versions
    "in 2024 at 12:30, see RFC 2616 section 14.9",  # years, times, sections
    "meeting on 2024-01-15 at 10:00",  # ISO date
    "order #555-123-4567",  # an order id grouped like a phone number
    "ISBN 978-3-16-148410-0",
    "listen on 0.0.0.0 or 127.0.0.1 and ::1",  # unspecified and loopback
    "std::vector<int> and a::b",  # C++ scopes
    "the token expired yesterday",  # the word, no value
    "it costs 1,234,567.89 dollars",
    "pi is 3.14159265358979",
])
def test_near_misses_are_left_alone(text: str) -> None:
    assert masked(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    # At the end of a sentence: the period is punctuation, not part of a number. Before this
    # test a card, phone or address followed by "." was not masked at all, or only in part
    # ("4111 1111 1111 1111." became "[phone] 1111.").
    ("My card is 4111 1111 1111 1111.", "My card is [card]."),
    ("My card is 4111-1111-1111-1111.", "My card is [card]."),
    ("card 4111111111111111. Thanks", "card [card]. Thanks"),
    ("Call me at +44 20 7946 0958.", "Call me at [phone]."),
    ("Call me at (555) 123-4567.", "Call me at [phone]."),
    ("My IP is 192.168.10.20.", "My IP is [ip]."),
    ("Is it 4111 1111 1111 1111? Or 4111 1111 1111 1111!", "Is it [card]? Or [card]!"),
])
def test_pii_at_the_end_of_a_sentence_is_masked(text: str, expected: str) -> None:
    assert masked(text) == expected


@pytest.mark.parametrize("text", [
    "version 1.2.3.4.5 is out.",  # a longer dotted number is not an address
    "it costs 1.50.", "we met in 2024.", "pi is 3.14159265358979.",
    "order 1234567812345670.5 shipped",
])
def test_sentence_final_numbers_that_are_not_pii_are_left_alone(text: str) -> None:
    assert masked(text) is None


def test_luhn_and_iban_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")
    assert not iban_valid("DE89 3704 0044 0532 0130")  # wrong length for Germany


def test_verdict_masks_text_as_written_and_logs_no_raw_pii() -> None:
    text = "Hi, I'm Ana, ana@example.com, card 5555 5555 5555 4444"
    verdict = Pii().inspect(make_subject(text, "input"))
    assert verdict.action is Action.MASK
    assert verdict.category is Category.PII
    assert verdict.masked == "Hi, I'm Ana, [email], card [card]"
    assert "ana@example.com" not in verdict.excerpt and "4444" not in verdict.excerpt
    assert "[email]" in verdict.excerpt
    assert "card" in verdict.reason and "email" in verdict.reason


def test_masks_apply_to_the_original_case_and_spacing() -> None:
    text = "Mail  ME at  Bob@Example.ORG  ok"
    assert masked(text) == "Mail  ME at  [email]  ok"


def test_kinds_are_configurable() -> None:
    text = "bob@example.com 192.168.1.1"
    assert masked(text, kinds=["email"]) == "[email] 192.168.1.1"
    assert masked(text, kinds=["ip"]) == "bob@example.com [ip]"
    with pytest.raises(ValueError, match="unknown PII kinds"):
        Pii(kinds=["dna"])


def test_text_without_pii_is_allowed() -> None:
    verdict = Pii().inspect(make_subject("How do I bake bread?", "input"))
    assert verdict.action is Action.ALLOW and verdict.masked is None


@pytest.mark.parametrize("odd", ["", "\x00" * 10, "@" * 500, "1" * 5000, "+" * 100])
def test_odd_input_never_raises(odd: str) -> None:
    assert Pii().inspect(make_subject(odd, "input")).check == "pii"
