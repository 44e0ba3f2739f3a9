"""Normalisation: undo encoding tricks once, so the content checks cannot be dodged by them.

``make_subject`` builds the :class:`Subject` every check inspects:

- ``normalized``: NFKC, zero-width / bidi / control characters dropped, combining marks
  stripped, Cyrillic and Greek look-alikes folded to Latin, case folded, whitespace collapsed;
- ``decoded``: further views, each normalised the same way: the de-obfuscated text (spaced or
  dotted letters joined, leetspeak undone), then payloads hidden in base64, hex, URL-encoding,
  rot13 or reversed text — only when they decode to mostly printable, word-like text.

The ``Normalise`` check itself only blocks absurd inputs (a huge run of one character, a wall of
combining marks, far too long a text): they are how models are pushed off their rails.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse

from assistant.safety.verdict import Action, Category, Direction, Subject, Verdict

# Zero-width, joiners, bidi overrides/isolates, soft hyphen, BOM, word joiner, tag characters.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f]"
)
# Control characters other than tab and newline.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")

# Cyrillic and Greek letters that look like Latin ones (after case folding), plus a few
# symbols NFKC leaves alone. Small on purpose: the letters attackers actually use.
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i",
    "ј": "j", "к": "k", "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "г": "r",
    "ѕ": "s", "т": "t", "у": "y", "ү": "y", "х": "x", "ԝ": "w", "ь": "b", "ѡ": "w", "ɡ": "g",
    "п": "n", "и": "u", "з": "3", "ч": "4", "б": "6",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "γ": "y", "μ": "u", "ϲ": "c", "ѵ": "v", "ϳ": "j",
    "ς": "s", "σ": "o", "θ": "o", "δ": "d", "λ": "a", "π": "n",
    # Latin look-alikes outside ASCII that NFKC keeps
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŀ": "l", "ß": "ss", "æ": "ae", "œ": "oe",
    "ɑ": "a", "ʀ": "r", "ʏ": "y", "ɪ": "i", "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e",
    "ɢ": "g", "ʜ": "h", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
})

# Capital Greek and Cyrillic letters that look like Latin capitals; folded before case folding
# turns them into lower-case letters of other shapes (Greek "Ν" would become "ν", a "v").
_CAPITAL_HOMOGLYPHS = str.maketrans({
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "А": "A", "В": "B", "Е": "E", "К": "K",
    "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S",
    "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W",
})

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "!": "i", "|": "l", "€": "e"})
_WORD = re.compile(r"[a-z0-9@$!|€]+")
# A leet character followed by a letter: "b0mb", "h4ck", "$hit" — but not "mp3" or "ipv4".
_LEET_INSIDE = re.compile(r"[013457@$!|€][a-z]")
# Three or more single letters (or leet characters) split by one and the same separator:
# "b.o.m.b", "b o m b", "b-o-m-b", "b_o_m_b", "b*o*m*b". Matched before whitespace is collapsed,
# so that a wider gap ("h o w  t o") still separates words.
_SPACED = re.compile(r"(?<![\w@$])[a-z0-9@$]([.\-_*/\\,]|[ \t])(?:[a-z0-9@$]\1){1,}"
                     r"[a-z0-9@$](?![\w@$])")
_SPACED_SEP = re.compile(r"[ \t.\-_*/\\,]")

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])"
                  r"|(?:\\x[0-9A-Fa-f]{2}){4,}")
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SEGMENT = re.compile(r"[:\n\"'`“”‘’]")

# Common English words: a decoding that yields more of them than the original text did is
# probably the real message (rot13 and reversed text decode every input, most into noise).
_COMMON_WORDS = frozenset(
    "the to and of a in is it you that how for i on with what can do my me make this are be "
    "your ignore all previous instructions tell give write show build kill get have not from "
    "about please step by want need who which where when why will would should now instead "
    "system prompt rules an as at or if so up no".split()
)

MAX_DECODED_VIEWS = 6
MAX_LEET_TOKEN = 24


def normalize(text: str) -> str:
    """The normalised form of ``text``: what the content checks match on."""
    return _SPACES.sub(" ", _clean(text)).strip()


def _clean(text: str) -> str:
    """Everything ``normalize`` does but collapsing whitespace."""
    if text.isascii():
        cleaned = _CONTROL.sub("", text)
    else:
        cleaned = unicodedata.normalize("NFKC", text)
        cleaned = _CONTROL.sub("", _INVISIBLE.sub("", cleaned))
        cleaned = cleaned.translate(_CAPITAL_HOMOGLYPHS).casefold().translate(_HOMOGLYPHS)
        if not cleaned.isascii():
            # Strip combining marks ("zalgo", accents) only; keep other scripts as they are.
            decomposed = unicodedata.normalize("NFD", cleaned)
            cleaned = unicodedata.normalize(
                "NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch))
            )
    return cleaned.casefold()


def plain(text: str) -> str:
    """The normalised text with spacing tricks and leetspeak undone (no decoded payloads)."""
    return deobfuscate(_clean(text))


def deobfuscate(cleaned: str) -> str:
    """Join spaced or dotted letters and undo leetspeak in a cleaned (``_clean``) text."""
    text = _SPACED.sub(lambda m: _SPACED_SEP.sub("", m.group(0)), cleaned)
    text = _SPACES.sub(" ", text).strip()
    tokens = text.split(" ")
    # Long runs without spaces are keys, hashes, base64 or URLs, never leetspeak.
    short = [i for i, token in enumerate(tokens) if len(token) <= MAX_LEET_TOKEN]
    if not any(_LEET_INSIDE.search(tokens[i]) for i in short):
        return text
    # The text is written in leetspeak: undo it in every word that mixes letters and leet
    # characters ("t0" too), leaving numbers alone.
    for i in short:
        tokens[i] = _WORD.sub(_unleet, tokens[i])
    return " ".join(tokens)


def _unleet(match: re.Match[str]) -> str:
    word = match.group(0)
    if word in ("1", "4"):  # "h0w d0 1 bu1ld 4 ..." — a lone I or a, in a leet text
        return word.translate(_LEET)
    if len(word) > 20 or not any(ch.isalpha() for ch in word) or word.isalnum() and (
            word.isalpha()):
        return word
    core = word.rstrip("!")  # "hello!" keeps its exclamation mark
    return core.translate(_LEET) + word[len(core):]


def make_subject(text: str, direction: Direction) -> Subject:
    """Build the subject every check inspects (see the module docstring)."""
    cleaned = _clean(text)
    normalized = _SPACES.sub(" ", cleaned).strip()
    views: list[str] = []
    _add_views(text, cleaned, normalized, views, depth=0)
    views = [v for v in dict.fromkeys(views) if v and v != normalized][:MAX_DECODED_VIEWS]
    return Subject(text=text, normalized=normalized, direction=direction, decoded=tuple(views))


def _add_views(raw: str, cleaned: str, normalized: str, views: list[str], depth: int) -> None:
    plain = deobfuscate(cleaned)
    if plain != normalized:
        views.append(plain)
    for payload in _hidden_payloads(raw, normalized):
        payload_cleaned = _clean(payload)
        decoded = _SPACES.sub(" ", payload_cleaned).strip()
        if decoded and decoded != normalized and decoded not in views:
            views.append(decoded)
            if depth == 0:  # one more level: base64 of hex, leet inside base64, ...
                _add_views(payload, payload_cleaned, decoded, views, depth + 1)


def _hidden_payloads(raw: str, normalized: str) -> list[str]:
    found: list[str] = []
    if len(raw) >= 16:
        for match in _BASE64.finditer(raw):
            token = match.group(0)
            if token.isalpha() and (token.islower() or token.isupper()):
                continue  # one long ordinary word, not an encoding
            decoded = _decode_base64(token)
            if decoded:
                found.append(decoded)
        for match in _HEX.finditer(raw):
            decoded = _decode_hex(match.group(0))
            if decoded:
                found.append(decoded)
    if len(_URL_ESCAPE.findall(raw)) >= 3:
        unquoted = urllib.parse.unquote(raw)
        if unquoted != raw and _printable(unquoted):
            found.append(unquoted)
    if len(normalized) >= 8:
        # The whole text, and each part after a colon or inside quotes: "rot13 this: vtaber ..."
        parts = [normalized] + [p for p in _SEGMENT.split(normalized) if len(p) >= 12]
        for part in dict.fromkeys(parts):
            baseline = _english_words(part)
            for candidate in (codecs.encode(part, "rot13"), part[::-1]):
                if _english_words(candidate) >= max(2, baseline + 2):
                    found.append(candidate)
    return found


def _english_words(text: str) -> int:
    return sum(1 for word in re.findall(r"[a-z]+", text) if word in _COMMON_WORDS)


def _decode_base64(token: str) -> str | None:
    data = token.replace("-", "+").replace("_", "/").rstrip("=")
    data += "=" * (-len(data) % 4)
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _as_text(decoded)


def _decode_hex(token: str) -> str | None:
    digits = re.sub(r"\\x|[ :]", "", token)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        decoded = bytes.fromhex(digits)
    except ValueError:
        return None
    return _as_text(decoded)


def _as_text(data: bytes) -> str | None:
    if len(data) < 4:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _printable(text) else None


def _printable(text: str) -> bool:
    """Mostly printable, word-like text (not the noise an ordinary word decodes into)."""
    if not text:
        return False
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\t")
    letters = sum(1 for ch in text if ch.isalpha() or ch == " ")
    return printable / len(text) >= 0.95 and letters / len(text) >= 0.6


# Absurd inputs: one character repeated this many times, this share of combining marks, or
# more characters than any chat message needs.
MAX_RUN = 200
MAX_COMBINING = 64
MAX_COMBINING_SHARE = 0.5
MAX_LENGTH = 32_000


def _run_pattern(length: int) -> re.Pattern[str]:
    return re.compile(r"(\S)\1{" + str(length - 1) + ",}")




class Normalise:
    """Blocks absurd inputs (as prompt injection); allows everything else."""

    name = "normalise"

    def __init__(self, max_length: int = MAX_LENGTH, max_run: int = MAX_RUN) -> None:
        self.max_length = max_length
        self.max_run = max_run
        self._run = _run_pattern(max_run)

    def inspect(self, subject: Subject) -> Verdict:
        try:
            reason = self._absurd(subject.text)
        except Exception as exc:  # a check never raises on odd input
            reason = f"could not inspect: {exc.__class__.__name__}"
        if reason is None:
            return Verdict.allow(self.name)
        return Verdict(Action.BLOCK, self.name, Category.PROMPT_INJECTION, score=1.0,
                       reason=reason, excerpt=subject.text[:40])

    def _absurd(self, text: str) -> str | None:
        if len(text) > self.max_length:
            return f"text of {len(text)} characters (limit {self.max_length})"
        run = self._run.search(text)
        if run:
            return f"one character repeated {len(run.group(0))}+ times"
        if not text.isascii():
            marks = sum(1 for ch in text if unicodedata.combining(ch))
            if marks > MAX_COMBINING and marks / max(1, len(text) - marks) > MAX_COMBINING_SHARE:
                return f"{marks} combining marks"
        return None
