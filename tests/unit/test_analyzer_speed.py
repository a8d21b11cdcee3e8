"""The analyzer's shortcuts keep every entity: the phone matcher skips only candidates with
too few digits to be a valid number anywhere, and dates are only looked for near a year."""

from __future__ import annotations

import phonenumbers

from services.analyzer import builtin
from services.analyzer.builtin import MIN_PHONE_DIGITS, find_entities


def test_no_valid_phone_number_is_shorter_than_the_shortcut() -> None:
    shortest = min(
        len(str(md.country_code)) + min(lengths)
        for md in (
            *(
                phonenumbers.PhoneMetadata.metadata_for_region(r)
                for r in phonenumbers.SUPPORTED_REGIONS
            ),
            *(
                phonenumbers.PhoneMetadata.metadata_for_nongeo_region(cc)
                for cc in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
            ),
        )
        if md is not None
        and (lengths := [n for n in (md.general_desc.possible_length or ()) if n > 0])
    )
    assert shortest >= MIN_PHONE_DIGITS
    assert hasattr(phonenumbers.PhoneNumberMatcher, "_extract_match")


def test_short_numbers_still_found() -> None:
    text = "Vienna +43 1 5555 or Berlin +49 30 1234; Niue +683 4002; NYC (212) 555-0100."
    phones = [e.text for e in find_entities(text) if e.kind == "phone"]
    expected = [m.raw_string for m in phonenumbers.PhoneNumberMatcher(text, builtin.PHONE_REGION)]
    assert phones == expected and "(212) 555-0100" in phones


def test_text_without_a_year_has_no_date_and_with_one_keeps_it() -> None:
    assert [e.kind for e in find_entities("On 31/01 at 10.30 we met.")] == []
    assert [e.text for e in find_entities("Signed 31 January 2024 in Rome.")] == ["31 January 2024"]
