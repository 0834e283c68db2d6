from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hookline.engine.sentences import SentenceChunker


def chunk(deltas: list[str]) -> list[str]:
    c = SentenceChunker()
    out = [s for d in deltas for s in c.push(d)]
    rest = c.flush()
    return out + ([rest] if rest else [])


def test_sentences_and_abbreviations():
    text = "Sure! Your oil change is at 9 a.m. tomorrow with Dr. Smith. It costs $39.99. Bye?"
    assert chunk([text[i : i + 7] for i in range(0, len(text), 7)]) == [
        "Sure!",
        "Your oil change is at 9 a.m. tomorrow with Dr. Smith.",
        "It costs $39.99.",
        "Bye?",
    ]


def test_long_run_on_is_cut_at_a_comma():
    text = "We can do Monday, " * 20
    out = chunk([text])
    assert all(len(s) <= 220 for s in out)
    assert " ".join(out).split() == text.split()


_text = st.text(alphabet=st.sampled_from(list("abcde XYZ.,!?\n'\"0123")), min_size=0, max_size=400)


@given(_text, st.lists(st.integers(min_value=1, max_value=30), max_size=40))
def test_chunking_keeps_every_word_in_order(text, cuts):
    deltas, i = [], 0
    for n in cuts:
        deltas.append(text[i : i + n])
        i += n
    deltas.append(text[i:])
    out = chunk(deltas)
    assert all(s and s == s.strip() for s in out)
    assert " ".join(out).split() == text.split()
