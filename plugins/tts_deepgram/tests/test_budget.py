"""The sliding-window flush budget on its own (no sockets, explicit times)."""

from __future__ import annotations

from hookline_tts_deepgram.budget import FlushBudget
from hookline_tts_deepgram.wire import split_text


def test_budget_allows_limit_flushes_per_window_and_frees_the_oldest_first() -> None:
    budget = FlushBudget(limit=3, window=60.0)
    for left, t in zip((3, 2, 1), (0.0, 10.0, 20.0), strict=True):
        assert budget.available(t) and budget.remaining(t) == left
        budget.record(t)
    assert not budget.available(30.0) and budget.remaining(30.0) == 0
    assert budget.free_at(30.0) == 60.0  # when the flush at t=0 leaves the window
    assert budget.available(60.0) and budget.remaining(60.0) == 1


def test_a_flush_every_two_seconds_for_ten_minutes_never_exceeds_the_limit() -> None:
    # What the stream does over a long call: send when the budget allows, else keep the
    # flush held and merge the next ones into it until a slot frees.
    budget = FlushBudget(limit=18, window=60.0)
    sent: list[float] = []
    for step in range(300):
        now = step * 2.0
        if budget.available(now):
            budget.record(now)
            sent.append(now)
    worst = max(sum(1 for t in sent if start <= t < start + 60.0) for start in sent)
    assert worst <= 18 < 20
    assert len(sent) >= 18 * 9  # about one window's worth per minute still goes out


def test_exhaust_blocks_a_whole_window() -> None:
    budget = FlushBudget(limit=5, window=1.0)
    budget.exhaust(10.0)
    assert not budget.available(10.5)
    assert budget.available(11.0)


def test_long_text_is_cut_at_spaces_under_the_speak_limit() -> None:
    text = "word " * 1000
    parts = split_text(text, limit=2000)
    assert "".join(parts) == text
    assert all(len(p) <= 2000 for p in parts)
    assert len(parts) == 3
