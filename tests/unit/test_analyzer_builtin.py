"""The built-in analysis: entities with offsets, no overlaps, language, keywords."""

from __future__ import annotations

import pytest

from services.analyzer.builtin import (
    ANALYZER_ID,
    BuiltinAnalyzer,
    analyze_text,
    detect_language,
    find_entities,
    keywords,
)
from services.analyzer.interface import ChunkAnalyzer, get_analyzer
from shared.events import Entity


def spans(text: str) -> list[tuple[str, str]]:
    found = find_entities(text)
    for e in found:
        assert text[e.start : e.end] == e.text
    return [(e.kind, e.text) for e in found]


def assert_well_formed(entities: list[Entity]) -> None:
    starts = [e.start for e in entities]
    assert starts == sorted(starts)
    for a, b in zip(entities, entities[1:], strict=False):
        assert a.end <= b.start, f"{a} overlaps {b}"


def test_email_with_offsets() -> None:
    text = "Write to jane.doe+bills@example.co.uk today."
    [entity] = find_entities(text)
    assert (entity.kind, entity.text, entity.start, entity.end) == (
        "email",
        "jane.doe+bills@example.co.uk",
        9,
        37,
    )


def test_urls_trim_sentence_punctuation() -> None:
    text = "Docs at https://example.org/a/b?x=1. Mirror (see www.mirror.net/path)."
    assert spans(text) == [
        ("url", "https://example.org/a/b?x=1"),
        ("url", "www.mirror.net/path"),
    ]
    assert spans("Wiki: https://en.wikipedia.org/wiki/Foo_(bar) ok") == [
        ("url", "https://en.wikipedia.org/wiki/Foo_(bar)")
    ]


@pytest.mark.parametrize(
    "phone",
    ["(415) 555-2671", "+44 20 7946 0958", "212-736-5000", "+33 1 42 68 53 00", "+49 30 901820"],
)
def test_phones_us_and_international(phone: str) -> None:
    text = f"Call {phone} now."
    [entity] = find_entities(text)
    assert (entity.kind, entity.text, entity.start) == ("phone", phone, 5)


@pytest.mark.parametrize(
    "date",
    [
        "2024-01-31",
        "31/01/2024",
        "01.02.2024",
        "January 31, 2024",
        "Jan. 31st 2024",
        "31 January 2024",
        "1st of March, 2023",
        "Jan 2024",
        "31. Januar 2024",
        "3 mars 2024",
    ],
)
def test_dates(date: str) -> None:
    text = f"Due on {date}, as agreed."
    assert spans(text) == [("date", date)]


@pytest.mark.parametrize(
    "amount",
    [
        "$1,234.56",
        "€12",
        "£5",
        "12.50 EUR",
        "USD 100",
        "100 dollars",
        "$5 million",
        "1.234,56 €",
        "US$3",
    ],
)
def test_money(amount: str) -> None:
    text = f"The fee is {amount} in total."
    assert spans(text) == [("money", amount)]


def test_no_false_entities_in_plain_numbers() -> None:
    assert find_entities("Chapter 12 has 345 pages and 2024 was a year; version 1.2.3.") == []


def test_overlaps_resolved_earliest_longest() -> None:
    text = (
        "See https://ex.com/u?mail=bob@ex.com&d=2024-01-31 then mail bob@ex.com "
        "on 2024-02-01 or pay USD 4155552671 or $100."
    )
    entities = find_entities(text)
    assert_well_formed(entities)
    assert [(e.kind, e.text) for e in entities] == [
        ("url", "https://ex.com/u?mail=bob@ex.com&d=2024-01-31"),
        ("email", "bob@ex.com"),
        ("date", "2024-02-01"),
        ("money", "USD 4155552671"),
        ("money", "$100"),
    ]


def test_dates_are_not_phone_numbers() -> None:
    kinds = {e.kind for e in find_entities("Signed 12/05/2023 and 2023-12-05 and 05.12.2023.")}
    assert kinds == {"date"}


def test_mixed_document_entities_sorted() -> None:
    text = (
        "Invoice 2024-117 for ACME Corporation.\nContact billing@acme.example or "
        "+1 415 555 0100.\nThe total due is $1,250.00 by March 3, 2025."
    )
    entities = find_entities(text)
    assert_well_formed(entities)
    assert [(e.kind, e.text) for e in entities] == [
        ("email", "billing@acme.example"),
        ("phone", "+1 415 555 0100"),
        ("money", "$1,250.00"),
        ("date", "March 3, 2025"),
    ]


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Please send the quarterly report to the whole team before Friday.", "en"),
        ("Der schnelle braune Fuchs springt über den faulen Hund.", "de"),
        ("Le renard brun rapide saute par-dessus le chien paresseux.", "fr"),
    ],
)
def test_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang
    assert analyze_text(text).language == lang


@pytest.mark.parametrize("text", ["", "Hello world", "12 34 56 78", "asdf qwer"])
def test_language_none_for_too_little_text(text: str) -> None:
    assert detect_language(text) is None


def test_keywords_frequency_then_alphabetical_without_stopwords() -> None:
    text = (
        "The contract and the contract annex. Payment terms: payment within 30 days. "
        "Zebra apple. The 2024 delivery of the delivery and the delivery."
    )
    assert keywords(text) == [
        "delivery",
        "contract",
        "payment",
        "annex",
        "apple",
        "days",
        "terms",
        "zebra",
    ]
    assert keywords(text, limit=3) == ["delivery", "contract", "payment"]


def test_keywords_skip_stopwords_of_other_languages_and_numbers() -> None:
    kws = keywords("Der Vertrag und der Vertrag 12345 für die Lieferung mit 2024 und 1st")
    assert kws == ["vertrag", "1st", "lieferung"]


def test_analysis_is_deterministic_and_complete() -> None:
    text = "Contact sales@example.com about the offer of €12 before 2024-01-31. " * 3
    first, second = analyze_text(text), analyze_text(text)
    assert first == second
    assert first.model_dump_json() == second.model_dump_json()
    assert first.analyzer == ANALYZER_ID
    assert first.cost_usd == 0.0
    assert first.word_count == 27
    assert first.keywords == ["contact", "offer"]
    assert [e.kind for e in first.entities] == ["email", "money", "date"] * 3


def test_empty_text() -> None:
    analysis = analyze_text("")
    assert analysis.language is None
    assert analysis.word_count == 0
    assert analysis.keywords == []
    assert analysis.entities == []


async def test_registry_and_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCPIPE_ANALYZER", raising=False)
    analyzer = get_analyzer()
    assert isinstance(analyzer, BuiltinAnalyzer)
    assert isinstance(analyzer, ChunkAnalyzer)
    assert analyzer.name == "builtin"
    assert (await analyzer.analyze("Mail a@b.org")).entities[0].kind == "email"
    monkeypatch.setenv("DOCPIPE_ANALYZER", "no-such-backend")
    with pytest.raises(ValueError, match="no-such-backend"):
        get_analyzer()
