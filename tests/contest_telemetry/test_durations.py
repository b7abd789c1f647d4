from __future__ import annotations

import math

import pytest

from contest_telemetry.schema import arming_duration_ms, as_ms, resolution_durations


def test_contract_example() -> None:
    assert resolution_durations(100, 340, 920) == (240, 580)


def test_arming_is_clamped_at_zero() -> None:
    assert arming_duration_ms(500, 340) == 0
    assert resolution_durations(500, 340, 100) == (0, 0)


def test_missing_started_falls_back_to_resolved() -> None:
    assert resolution_durations(100, None, 920) == (820, 0)


def test_missing_created_falls_back_to_started() -> None:
    assert resolution_durations(None, 340, 920) == (0, 580)


def test_nothing_known_gives_nothing() -> None:
    assert resolution_durations(None, None, None) == (None, None)
    assert arming_duration_ms(None, 340) is None


@pytest.mark.parametrize("bad", ["100", math.nan, -1, True, None, [], math.inf])
def test_non_numbers_nan_and_negatives_are_missing(bad: object) -> None:
    assert as_ms(bad) is None
    # a bad startedAt is treated as missing, so it falls back to resolvedAt
    assert resolution_durations(100, bad, 920) == (820, 0)


def test_zero_is_valid() -> None:
    assert as_ms(0) == 0
    assert resolution_durations(0, 0, 0) == (0, 0)
