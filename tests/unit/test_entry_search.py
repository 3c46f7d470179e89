"""The search's LIKE pattern: the text is matched as written, LIKE's own characters
included."""

from __future__ import annotations

from nexus_ssot.projections.entry_search import like_pattern


def test_the_text_is_found_anywhere() -> None:
    assert like_pattern("eu-west") == "%eu-west%"


def test_percent_underscore_and_backslash_are_plain_characters() -> None:
    assert like_pattern("100%") == "%100\\%%"
    assert like_pattern("a_b") == "%a\\_b%"
    assert like_pattern("c:\\dir") == "%c:\\\\dir%"
