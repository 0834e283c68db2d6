"""Questions as callers put them find the topic of the shop's knowledge file that answers
them; questions the file does not cover find nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookline.logs import call_log
from hookline.testing.scripted import call_info
from hookline.tools import ToolContext
from hookline_knowledge import KnowledgeSettings
from hookline_knowledge.answers import file_tool
from hookline_knowledge.retrieval import KnowledgeIndex
from hookline_knowledge.sections import Section, read_sections, split_sections

AUTOMOTIVE = Path(__file__).resolve().parents[3] / "config" / "knowledge" / "automotive.md"
SETTINGS = KnowledgeSettings(file="knowledge/automotive.md")


@pytest.fixture(scope="module")
def index() -> KnowledgeIndex:
    return KnowledgeIndex(read_sections(AUTOMOTIVE))


def best(index: KnowledgeIndex, question: str) -> list[str]:
    found = index.search(
        question,
        limit=SETTINGS.max_sections,
        min_score=SETTINGS.min_score,
        min_coverage=SETTINGS.min_coverage,
    )
    return [section.title for section, _ in found]


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("can I get a loaner", "Loaner cars and shuttle"),
        ("do you have a courtesy car while mine is in the shop", "Loaner cars and shuttle"),
        ("do you take Amex", "Payment"),
        ("do you accept credit cards", "Payment"),
        ("can I pay with apple pay", "Payment"),
        ("do you offer financing", "Payment"),
        ("where do I park", "Address, directions and parking"),
        ("is parking free", "Address, directions and parking"),
        ("how do I get there from the highway", "Address, directions and parking"),
        ("is there a warranty on your work", "Warranty on our repairs"),
        ("will coming to you void my factory warranty", "Manufacturer warranty and recalls"),
        ("how much do you charge to figure out what's wrong", "Diagnostic fee"),
        ("my check engine light is on, how much to look at it", "Diagnostic fee"),
        ("can you keep my winter tires over the summer", "Tire storage and seasonal swaps"),
        ("is there somewhere to wait", "Waiting room"),
        ("do you work on teslas", "Vehicles we service"),
        ("do you fix motorcycles", "Vehicles we service"),
        ("how much is an oil change", "Prices"),
        ("what are your hours", "Hours and holidays"),
        ("can I leave my keys after hours", "Dropping off and picking up"),
    ],
)
def test_paraphrased_questions_find_their_topic(
    index: KnowledgeIndex, question: str, topic: str
) -> None:
    titles = best(index, question)
    assert titles, f"{question!r} found nothing"
    assert topic in titles, f"{question!r} found {titles}"
    if "hours" not in question:  # the hours topic points to the key drop box, and back
        assert titles[0] == topic, f"{question!r} ranked {titles}"


@pytest.mark.parametrize(
    "question",
    [
        "what's the weather",
        "what's the weather going to be like tomorrow",
        "do you sell pizza",
        "who won the game last night",
        "tell me a joke",
        "can you recommend a good dentist",
        "um",
        "",
    ],
)
def test_questions_the_file_does_not_cover_find_nothing(
    index: KnowledgeIndex, question: str
) -> None:
    assert best(index, question) == []


def ctx() -> ToolContext:
    return ToolContext(
        call=call_info(), control=None, logger=call_log("test", "c1"), tool_call_id="t1"
    )  # type: ignore[arg-type]


async def test_the_tool_answers_with_a_few_bounded_topics(index: KnowledgeIndex) -> None:
    answer_question = file_tool(index, SETTINGS)
    result = await answer_question.handler(
        answer_question.decode('{"question": "do you take Amex"}'), ctx()
    )
    assert result["found"] is True
    assert result["topics"][0]["topic"] == "Payment"
    assert "American Express" in result["topics"][0]["text"]
    assert 1 <= len(result["topics"]) <= SETTINGS.max_sections
    assert sum(len(t["text"]) for t in result["topics"]) <= SETTINGS.max_chars


async def test_the_tool_says_it_does_not_know_and_offers_a_message(index: KnowledgeIndex) -> None:
    answer_question = file_tool(index, SETTINGS)
    result = await answer_question.handler(
        answer_question.decode('{"question": "do you sell pizza"}'), ctx()
    )
    assert result["found"] is False
    assert "don't have that information" in result["instructions"]
    assert "take a message" in result["instructions"]
    assert "topics" not in result


async def test_a_long_file_never_floods_the_prompt() -> None:
    # One huge topic about loaners and many others: the answer stays within max_chars.
    sections = [Section("Loaner cars", "Loaner cars are free. " * 400)] + [
        Section(f"Topic {i}", f"Loaner policy number {i}. " * 50) for i in range(200)
    ]
    settings = KnowledgeSettings(file="k.md", max_sections=3, max_chars=600)
    answer_question = file_tool(KnowledgeIndex(sections), settings)
    result = await answer_question.handler(
        answer_question.decode('{"question": "can I get a loaner car"}'), ctx()
    )
    assert result["found"] is True
    total = sum(len(t["text"]) for t in result["topics"])
    assert 0 < total <= 600
    assert result["topics"][0]["text"].endswith("…")


def test_headings_split_topics_with_their_parents_outside_code_and_comments() -> None:
    sections = split_sections(
        "# Shop facts\n"
        "<!-- editors: keep this short -->\n"
        "## Payment\nCards and cash.\n"
        "### Financing\nSix months, no interest.\n"
        "```\n# not a heading\n```\n"
        "## Parking\nFree, in front.\n"
        "## Empty\n"
    )
    assert [s.title for s in sections] == ["Payment", "Payment > Financing", "Parking"]
    assert "# not a heading" in sections[1].text
    assert not any("editors" in s.text for s in sections)


def test_a_file_with_several_top_level_headings_keeps_them_as_topics() -> None:
    sections = split_sections("# Payment\nCards.\n# Parking\nFree.\n")
    assert [s.title for s in sections] == ["Payment", "Parking"]
