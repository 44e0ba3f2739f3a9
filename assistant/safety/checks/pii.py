"""Personal data and secrets: found in the text as written and masked with typed placeholders.

Each kind is a pattern plus, where one exists, a validation that rules out look-alikes: the
Luhn checksum for cards, mod 97 for IBANs, ``ipaddress`` for IP addresses, digit counts and
separators for phone numbers (so years, times, versions and order ids are left alone).
Matching runs on ``subject.text`` (not the normalised view) so that masks land on the user's
own characters; ``\\d`` matches fullwidth and other Unicode digits too.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from assistant.safety.verdict import Action, Category, Subject, Verdict

log = logging.getLogger(__name__)

Validator = Callable[[re.Match[str]], "tuple[int, int] | None"]


@dataclass(frozen=True)
class Kind:
    """One kind of personal data: its placeholder, its pattern, and what a match must pass."""

    name: str
    placeholder: str
    pattern: re.Pattern[str]
    validate: Validator


def _whole(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span()


def _group(name: str) -> Validator:
    def span(match: re.Match[str]) -> tuple[int, int] | None:
        return match.span(name) if match.group(name) else None
    return span


def _digits(text: str) -> str:
    return "".join(str(int(ch)) for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for position, ch in enumerate(reversed(number)):
        digit = int(ch)
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    number = _digits(match.group(0))
    # Card networks' numbers start with 2 (Mastercard 2-series) to 6 (Discover, UnionPay).
    if 13 <= len(number) <= 19 and number[0] in "23456" and luhn_valid(number):
        return match.span()
    return None


# Lengths of IBANs by country (ISO 13616 registry), for the common ones; others need 15–34.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}


def iban_valid(iban: str) -> bool:
    """ISO 13616: the right length for the country and the mod-97 check equal to 1."""
    iban = iban.replace(" ", "").replace("-", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34 or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span() if iban_valid(match.group(0)) else None


def _ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    before = match.string[max(0, match.start() - 8):match.start()].lower()
    if re.search(r"(?:\bv|\bversion\s*|\bver\.?\s*)$", before):
        return None  # v1.2.3.4 is a version number
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_loopback:
        return None  # 0.0.0.0 and 127.0.0.1 identify nobody
    return match.span()


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    if text.count(":") < 2 or sum(ch.isalnum() for ch in text) < 6:
        return None  # "a::b", times and C++ scopes are not addresses
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_loopback:
        return None
    return match.span()


def _phone(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    digits = _digits(text)
    international = text.startswith(("+", "00"))
    if not 9 <= len(digits) <= 15 or (not international and len(digits) < 10):
        return None
    groups = re.split(r"[\s\-.()/]+", text.strip("+() "))
    if not international and len(groups) < 2 and not match.group("cue"):
        return None  # a bare run of digits is an order id, unless "call me on ..." says so
    if "." in text and not re.fullmatch(r"\(?\d{3}\)?\.\d{3}\.\d{4}", text):
        return None  # dotted numbers are versions or IP addresses, except 555.123.4567
    if re.fullmatch(r"\d{4}[-/.]\d{2}[-/.]\d{2}.*", text):
        return None  # an ISO date
    before = match.string[max(0, match.start("number") - 12):match.start("number")].lower()
    if re.search(r"(?:isbn|issn|order|invoice|ref|id|no\.|#)[\s:#-]*$", before):
        return None  # an identifier that happens to be grouped like a phone number
    return match.span("number")


_SECRET_VALUE = r"[A-Za-z0-9+/_.=~-]"

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("email", "[email]", re.compile(
        r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,24}(?![\w-])"), _whole),
    Kind("secret", "[secret]", re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
        r"|\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"  # AWS access key ids
        r"|\bgh[pousr]_[A-Za-z0-9]{30,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"  # GitHub
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
        r"|\bxapp-\d-[A-Za-z0-9-]{10,}"  # Slack app-level tokens
        r"|\bsk-(?:proj-|ant-|live_|test_)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic, Stripe
        r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
        r"|\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b"),  # Telegram bot tokens
        _whole),
    Kind("credential", "[secret]", re.compile(
        # A value after key/token/secret/password: long and key-like, or any password.
        r"\b(?:(?:api|access|secret|private|auth|client)[_ -]?(?:key|token|secret)"
        r"|token|secret|bearer|authorization)\s*(?:[:=]|\bis\b)?\s*[\"']?"
        r"(?P<value>(?=" + _SECRET_VALUE + r"*\d)(?=" + _SECRET_VALUE + r"*[A-Za-z])"
        + _SECRET_VALUE + r"{16,})"
        r"|\b(?:password|passwd|pwd|passphrase|pin)\s*(?:[:=]|\bis\b)\s*[\"']?"
        r"(?P<password>[^\s\"']{4,})", re.IGNORECASE), lambda m: m.span("value") if m.group("value")
        else m.span("password")),
    Kind("iban", "[iban]", re.compile(
        r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,4})?\b"), _iban),
    Kind("card", "[card]", re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?!\d|[.-]\d)"), _card),
    Kind("ip", "[ip]", re.compile(
        r"(?<![\w.:])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\w)"
        r"|(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:.])"),
        lambda m: _ipv4(m) if "." in m.group(0) else _ipv6(m)),
    Kind("phone", "[phone]", re.compile(
        r"(?P<cue>(?i:\b(?:call|phone|tel|mobile|cell|whatsapp|sms|text me|fax|number)\b"
        r"[^\d+(]{0,20}))?"
        r"(?P<number>(?<![\w+.\-/:])(?:\+|00)?\(?\d{1,4}\)?(?:[ \-./]?\(?\d{1,5}\)?){2,6}"
        r"(?!\w|[.\-/:]\w))"), _phone),
)}

DEFAULT_KINDS = tuple(KINDS)


@dataclass(frozen=True)
class Found:
    kind: str
    start: int
    end: int


def find_pii(text: str, kinds: Iterable[str] = DEFAULT_KINDS) -> list[Found]:
    """Every span of personal data in ``text``, earlier kinds winning overlaps, in order."""
    found: list[Found] = []
    for name in kinds:
        kind = KINDS[name]
        for match in kind.pattern.finditer(text):
            span = kind.validate(match)
            if span is None:
                continue
            start, end = span
            if any(start < other.end and other.start < end for other in found):
                continue
            found.append(Found(name, start, end))
    return sorted(found, key=lambda item: item.start)


def mask(text: str, found: list[Found]) -> str:
    """``text`` with each found span replaced by its kind's placeholder."""
    pieces: list[str] = []
    position = 0
    for item in found:
        pieces.append(text[position:item.start])
        pieces.append(KINDS[item.kind].placeholder)
        position = item.end
    pieces.append(text[position:])
    return "".join(pieces)


def redacted_excerpt(masked: str, found: list[Found], width: int = 40) -> str:
    """A short piece of the masked text around the first placeholder, for the moderation log."""
    placeholder = KINDS[found[0].kind].placeholder
    at = masked.find(placeholder)
    start = max(0, at - width)
    end = min(len(masked), at + len(placeholder) + width)
    return ("…" if start else "") + masked[start:end] + ("…" if end < len(masked) else "")


class Pii:
    """Masks e-mail addresses, phone numbers, cards, IBANs, IP addresses, keys and tokens."""

    name = "pii"

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        chosen = tuple(kinds) if kinds is not None else DEFAULT_KINDS
        unknown = [k for k in chosen if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}; known: {', '.join(KINDS)}")
        # Keep the built-in order: it decides which kind wins an overlap (a key before a card).
        self.kinds = tuple(k for k in KINDS if k in chosen)

    def inspect(self, subject: Subject) -> Verdict:
        try:
            found = find_pii(subject.text, self.kinds)
        except Exception:  # a check never raises on odd input
            log.exception("PII check failed; letting the text through")
            return Verdict.allow(self.name)
        if not found:
            return Verdict.allow(self.name)
        masked = mask(subject.text, found)
        kinds = sorted({item.kind for item in found})
        return Verdict(Action.MASK, self.name, Category.PII, score=1.0, masked=masked,
                       reason="found " + ", ".join(kinds),
                       excerpt=redacted_excerpt(masked, found))
