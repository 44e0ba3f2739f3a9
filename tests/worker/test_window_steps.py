"""The memory window trims in large steps, so the prompt prefix a worker saved stays valid."""

from __future__ import annotations

from assistant.envelope import ChatMessage
from assistant.memory import Summary, build_window
from tests.auxil.fake_engine import FakeEngine


def test_the_window_opens_at_stable_cuts_so_the_prompt_prefix_changes_in_steps() -> None:
    engine = FakeEngine()
    records: list[ChatMessage] = []
    firsts = []
    for n in range(30):
        records += [ChatMessage(role="user", text=f"q{n} " + "word " * 9),
                    ChatMessage(role="assistant", text=f"a{n} " + "word " * 9)]
        window = build_window(records, Summary(), budget_tokens=14 * 12,
                              count_tokens=engine.count_tokens, step_tokens=14 * 6)
        assert engine.count_tokens(list(window.messages)) <= 14 * 12
        assert window.messages[0].role == "user"
        firsts.append(window.messages[0].text.split()[0])
    changes = sum(1 for a, b in zip(firsts, firsts[1:], strict=False) if a != b)
    # Trimming one turn at a time would move the window's start on 24 of these 29 turns.
    assert 0 < changes <= 8, firsts
