"""core.http.parse_id, the one parser of ids from requests; core.text.without_surrogates, text UTF-8 can encode."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.http import MAX_ID, parse_id
from core.text import without_surrogates


@given(st.integers(min_value=0, max_value=MAX_ID))
def test_an_id_in_ascii_digits_is_read(number):
    assert parse_id(str(number)) == number
    assert parse_id(number) == number


@given(st.text())
def test_anything_else_is_no_id(text):
    if text.isascii() and text.isdigit() and int(text) <= MAX_ID and len(text) <= 19:
        assert parse_id(text) == int(text)
    else:
        assert parse_id(text) is None


@pytest.mark.parametrize("value", ["²", "٣", "３", "１２", "-1", "+1", " 7", "7 ", "7\n", "1_0", "1e3", "", "0x1f",
                                   str(MAX_ID + 1), "0" * 20, None, 1.0, True, -1, MAX_ID + 1, [1]])
def test_odd_values_are_no_id(value):
    assert parse_id(value) is None


def test_lone_surrogates_are_dropped_and_characters_kept():
    assert without_surrogates("a\ud800b\udfffc 😀 ünï") == "abc 😀 ünï"
    assert without_surrogates("a\ud800b\udfffc").encode() == b"abc"
