"""Advancing windows: their text, and when they open, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unveil.release.errors import InvalidWindow
from unveil.release.window import Span, Window, parse_window

WEEKDAYS = frozenset(range(5))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spans", "zone"),
    [
        ("Mon-Fri 09:00-16:00 Europe/Amsterdam", [Span(WEEKDAYS, 540, 960)], "Europe/Amsterdam"),
        ("mon,WED,friday 9:30-17:00 UTC", [Span(frozenset({0, 2, 4}), 570, 1020)], "UTC"),
        ("Fri-Mon 00:00-24:00 Asia/Tokyo", [Span(frozenset({4, 5, 6, 0}), 0, 1440)], "Asia/Tokyo"),
        ("daily 22:00-24:00 UTC", [Span(frozenset(range(7)), 1320, 1440)], "UTC"),
        (
            "Mon-Thu 09:00-16:00; Fri 09:00-12:00 Europe/Amsterdam",
            [Span(frozenset(range(4)), 540, 960), Span(frozenset({4}), 540, 720)],
            "Europe/Amsterdam",
        ),
        ("Mon , Tue  08:00-09:00   UTC", [Span(frozenset({0, 1}), 480, 540)], "UTC"),
    ],
)
def test_a_window_is_read_from_its_text(text: str, spans: list[Span], zone: str) -> None:
    window = parse_window(text)
    assert window == Window(tuple(spans), zone)
    assert parse_window(str(window)) == window


def test_the_canonical_text_groups_days_into_ranges() -> None:
    assert str(parse_window("Fri-Mon 09:00-16:00 UTC")) == "Mon,Fri-Sun 09:00-16:00 UTC"
    assert str(parse_window("Sat,Sun 09:00-16:00 UTC")) == "Sat,Sun 09:00-16:00 UTC"
    assert str(parse_window("daily 00:00-24:00 UTC")) == "Mon-Sun 00:00-24:00 UTC"
    assert str(parse_window("Mon 09:00-10:00; Mon 09:00-10:00 UTC")) == "Mon 09:00-10:00 UTC"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Mon-Fri 09:00-09:00 UTC", "never opens"),
        ("Mon-Fri 16:00-09:00 UTC", "crosses midnight"),
        ("Mon-Fri 09:00-16:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("Mon-Fri 09:00-16:00 Europe", "unknown time zone 'Europe'"),
        ("Mon-Fri 09:00-16:00 ../etc/passwd", "not an IANA time zone name"),
        ("Mon-Fri 09:00-16:00", "days, hours and a time zone"),
        ("Mnd-Fri 09:00-16:00 UTC", "unknown day 'Mnd'"),
        ("Mon,,Fri 09:00-16:00 UTC", "an empty day"),
        ("Mon-Fri 9-16 UTC", "HH:MM-HH:MM"),
        ("Mon-Fri 09:00-25:00 UTC", "not a time of day"),
        ("Mon-Fri 09:60-16:00 UTC", "not a time of day"),
        ("Mon-Fri 09:00-24:30 UTC", "not a time of day"),
        ("Mon 09:00-10:00; 10:00-11:00 UTC", "must be days then hours"),
    ],
)
def test_a_bad_window_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window(text)
    assert reason in caught.value.reason
    assert caught.value.text == text


def test_a_window_must_be_text() -> None:
    with pytest.raises(InvalidWindow, match="a window is text"):
        parse_window(42)  # type: ignore[arg-type]


def test_naive_times_are_refused() -> None:
    window = parse_window("Mon-Fri 09:00-16:00 UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        window.is_open(datetime(2026, 3, 2, 10, 0))


# -- when it is open --------------------------------------------------------------

AMSTERDAM = parse_window("Mon-Fri 09:00-16:00 Europe/Amsterdam")


def test_the_hours_are_local_and_the_end_is_excluded() -> None:
    # Monday 2 March 2026: Amsterdam is UTC+1
    assert not AMSTERDAM.is_open(utc(2026, 3, 2, 7, 59, 59))
    assert AMSTERDAM.is_open(utc(2026, 3, 2, 8, 0))
    assert AMSTERDAM.is_open(utc(2026, 3, 2, 14, 59, 59))
    assert not AMSTERDAM.is_open(utc(2026, 3, 2, 15, 0))
    # Saturday
    assert not AMSTERDAM.is_open(utc(2026, 3, 7, 12, 0))


def test_a_hold_that_ends_on_friday_evening_waits_for_monday_morning() -> None:
    assert AMSTERDAM.next_opening(utc(2026, 3, 6, 16, 0)) == utc(2026, 3, 9, 8, 0)
    # already open: now
    assert AMSTERDAM.next_opening(utc(2026, 3, 9, 9, 30)) == utc(2026, 3, 9, 9, 30)


def test_spring_forward_monday_opens_at_nine_summer_time() -> None:
    # the clocks go forward on Sunday 29 March 2026, 02:00 -> 03:00 (UTC+1 -> UTC+2)
    assert AMSTERDAM.next_opening(utc(2026, 3, 27, 16, 0)) == utc(2026, 3, 30, 7, 0)
    assert AMSTERDAM.is_open(utc(2026, 3, 30, 7, 0))
    assert not AMSTERDAM.is_open(utc(2026, 3, 30, 14, 0))  # 16:00 summer time


def test_fall_back_monday_opens_at_nine_winter_time() -> None:
    # the clocks go back on Sunday 25 October 2026, 03:00 -> 02:00 (UTC+2 -> UTC+1)
    assert AMSTERDAM.next_opening(utc(2026, 10, 23, 15, 0)) == utc(2026, 10, 26, 8, 0)


def test_an_opening_in_the_skipped_hour_happens_when_the_clock_jumps() -> None:
    window = parse_window("Sun 02:30-04:00 Europe/Amsterdam")
    # 02:30 does not exist on 29 March 2026; at 01:00 UTC the clock shows 03:00
    assert window.next_opening(utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 1, 0)
    assert not window.is_open(utc(2026, 3, 29, 0, 59, 59))
    assert window.is_open(utc(2026, 3, 29, 1, 0))
    assert not window.is_open(utc(2026, 3, 29, 2, 0))  # 04:00 summer time


def test_a_window_inside_the_skipped_hour_waits_for_the_next_week() -> None:
    window = parse_window("Sun 02:00-02:59 Europe/Amsterdam")
    assert window.next_opening(utc(2026, 3, 28, 23, 0)) == utc(2026, 4, 5, 0, 0)


def test_the_repeated_hour_is_open_both_times() -> None:
    window = parse_window("Sun 02:00-02:30 Europe/Amsterdam")
    # 02:00 summer time is 00:00 UTC; 02:00 winter time is 01:00 UTC
    assert window.next_opening(utc(2026, 10, 24, 22, 0)) == utc(2026, 10, 25, 0, 0)
    assert not window.is_open(utc(2026, 10, 25, 0, 30))
    assert window.next_opening(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 1, 0)
    assert window.is_open(utc(2026, 10, 25, 1, 29))
    assert window.next_opening(utc(2026, 10, 25, 1, 30)) == utc(2026, 11, 1, 1, 0)


def test_new_york_changes_on_other_days() -> None:
    window = parse_window("Mon-Fri 09:00-17:00 America/New_York")
    # US clocks go forward on Sunday 8 March 2026: EST (UTC-5) -> EDT (UTC-4)
    assert window.next_opening(utc(2026, 3, 6, 23, 0)) == utc(2026, 3, 9, 13, 0)
    assert window.next_opening(utc(2026, 3, 5, 23, 0)) == utc(2026, 3, 6, 14, 0)


def test_the_answer_is_in_utc_whatever_zone_the_question_is_in() -> None:
    from zoneinfo import ZoneInfo

    asked = datetime(2026, 3, 6, 17, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    answer = AMSTERDAM.next_opening(asked)
    assert answer == utc(2026, 3, 9, 8, 0)
    assert answer.tzinfo is UTC


ZONES = st.sampled_from(
    ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
)
SPANS = st.builds(
    lambda days, a, b: Span(frozenset(days), min(a, b), max(a, b) + 1),
    st.sets(st.integers(0, 6), min_size=1),
    st.integers(0, 1439),
    st.integers(0, 1439),
)
WINDOWS = st.builds(
    lambda spans, zone: Window(tuple(spans), zone), st.lists(SPANS, min_size=1, max_size=3), ZONES
)
INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=40, deadline=None)
@given(WINDOWS, INSTANTS)
def test_the_next_opening_is_open_and_nothing_before_it_is(window: Window, at: datetime) -> None:
    opening = window.next_opening(at)
    assert opening >= at
    assert window.is_open(opening)
    # every opening lies on a whole second: look at each minute before it, and the second before
    probe = at
    while probe < opening - timedelta(seconds=1):
        assert not window.is_open(probe), probe
        probe = probe.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if opening > at:
        assert not window.is_open(opening - timedelta(seconds=1))


@settings(max_examples=60)
@given(WINDOWS)
def test_the_text_reads_back_as_the_same_window(window: Window) -> None:
    again = parse_window(str(window))
    assert set(again.spans) == set(window.spans)
    assert again.zone == window.zone
