"""Streaming aggregation of contest telemetry into the monitor summary.

The summary reproduces the JavaScript monitor moderation already reads (see the
contract): events are grouped by ``contestId``, ``launched``/``resolved`` set the
durations, counts and capacity, and percentiles are nearest-rank. Lines are folded
one at a time into compact per-contest records, so memory grows with the number of
contests, never with the number of lines.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any

import orjson

from contest_telemetry.schema import (
    ARMING_BUDGET_MS,
    LAUNCHED,
    MULTI_ACTOR_OVER,
    PREFIX,
    RESOLUTION_BUDGET_MS,
    RESOLVED,
    WORKFLOW_FAILED,
    iso_time_ms,
)

__all__ = [
    "DEFAULT_ARMING_BUDGET_MS",
    "DEFAULT_RESOLUTION_BUDGET_MS",
    "MAX_DEPTH",
    "ContestRecord",
    "SummaryBuilder",
    "decode_event_line",
    "finite_non_negative",
    "is_depth_error",
    "parse_event_line",
    "parse_time_ms",
    "percentile",
    "summarise",
]

DEFAULT_ARMING_BUDGET_MS = ARMING_BUDGET_MS
DEFAULT_RESOLUTION_BUDGET_MS = RESOLUTION_BUDGET_MS

MAX_DEPTH = 1024  # orjson's nesting limit
_DEPTH_ERRORS = ("depth limit", "recursion limit")  # its messages for deeper input (3.10+, older)


class ContestRecord:
    """What the summary needs of one contest; slots keep a million of them small."""

    __slots__ = (
        "arming",
        "capacity",
        "contest_id",
        "count",
        "hub_id",
        "outcomes",
        "resolution",
        "room_id",
    )

    def __init__(self, contest_id: Any, hub_id: Any, room_id: Any) -> None:
        self.contest_id = contest_id
        self.hub_id = hub_id
        self.room_id = room_id
        self.arming: float | None = None
        self.resolution: float | None = None
        self.count: float | None = None
        self.capacity: float | None = None
        # Most contests resolve once; a list is only allocated when an outcome arrives.
        self.outcomes: list[Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``raw.contests`` entry, keys in the order the JavaScript monitor prints them."""
        return {
            "contestId": self.contest_id,
            "hubId": self.hub_id,
            "roomId": self.room_id,
            "armingDurationMs": self.arming,
            "resolutionDurationMs": self.resolution,
            "participantCount": self.count,
            "participantCapacity": self.capacity,
            "outcomes": list(self.outcomes or ()),
        }


def finite_non_negative(value: object) -> float | None:
    """A JSON number that is finite and >= 0, as the double JavaScript would hold; else None.

    Booleans and numeric strings are not numbers (``typeof v === 'number'``); the
    contract treats NaN and negative values as missing, while 0 is valid.
    """
    kind = type(value)
    if kind is float:
        number: float = value  # type: ignore[assignment]
    elif kind is int:
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:  # JSON.parse turns such a literal into Infinity
            return None
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number + 0.0  # -0 becomes 0, as JSON.stringify and toFixed print it


def _js_truthy(value: object) -> bool:
    """JavaScript truthiness: unlike Python, empty objects and arrays are truthy."""
    if value is None or value is False:
        return False
    kind = type(value)
    if kind is str:
        return value != ""
    if kind is int or kind is float:
        return value == value and value != 0
    return True


_identity_keys = itertools.count()


def _contest_key(contest_id: Any) -> Hashable:
    """A dict key that separates ids the way a JavaScript ``Map`` does.

    ``"1"`` and ``1`` are different contests there, and every object is its own key.
    """
    kind = type(contest_id)
    if kind is str:
        return contest_id
    if kind is int or kind is float:
        try:
            return ("n", float(contest_id))
        except OverflowError:
            return ("n", math.inf)
    if kind is bool:
        return ("b", contest_id)
    return ("o", next(_identity_keys))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int | float:
    # JSON.parse reads every number as a double: past 64 bits (where orjson gives up) take
    # the double, which also spares int() its digit limit and its quadratic time.
    return int(text) if len(text) <= 20 else float(text)


def is_depth_error(error: orjson.JSONDecodeError) -> bool:
    """Whether orjson refused the text for nesting deeper than ``MAX_DEPTH``."""
    return error.msg.startswith(_DEPTH_ERRORS)


_TOO_DEEP: Any = object()
"""What :func:`decode_event_line` returns for JSON nested deeper than ``MAX_DEPTH``."""


def decode_event_line(line: bytes) -> Any:
    """Decode one NDJSON line: the value, None when ``JSON.parse`` would have thrown, or ``_TOO_DEEP``.

    orjson is the fast path and refuses nesting deeper than 1024 levels (``MAX_DEPTH``);
    such a line is skipped (and counted) rather than parsed some slower, recursive way.
    orjson also refuses a few texts ``JSON.parse`` accepts (numbers beyond double range,
    lone surrogates, invalid UTF-8, which Node decodes to U+FFFD), so a line failing for
    another reason is retried with the standard library before it counts as junk.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        if is_depth_error(error):
            return _TOO_DEEP
    try:
        return json.loads(
            line.decode("utf-8", "replace"), parse_constant=_reject_constant, parse_int=_parse_int
        )
    except ValueError:
        return None
    except RecursionError:  # the standard library's limit is about 1000 levels
        return _TOO_DEEP


def parse_event_line(line: bytes) -> Any:
    """Decode one NDJSON line, or return None when ``JSON.parse`` would have thrown or it is too deep."""
    event = decode_event_line(line)
    return None if event is _TOO_DEEP else event


def parse_time_ms(value: object) -> float | None:
    """Epoch milliseconds from a number or an ISO-8601 string; None when it is neither.

    A time without an offset is taken as UTC, which is what the hubs log.
    """
    kind = type(value)
    if kind is int or kind is float:
        number = float(value)  # type: ignore[arg-type]
        return number if math.isfinite(number) else None
    if kind is not str:
        return None
    try:
        return iso_time_ms(value, False)  # type: ignore[arg-type]
    except ValueError:
        return None


def percentile(sorted_values: Sequence[float], rank: float) -> float | None:
    """Nearest rank without interpolation: ``sorted[min(n-1, max(0, ceil(p/100*n) - 1))]``."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return sorted_values[0]
    return sorted_values[min(n - 1, max(0, math.ceil((rank / 100) * n) - 1))]


def _js_sum(values: Iterable[float]) -> float:
    # Left-to-right addition like Array.prototype.reduce; sum() may compensate (3.12+).
    total = 0.0
    for value in values:
        total += value
    return total


def _duration_block(values: list[float], missing: int, budget: float) -> dict[str, Any]:
    values.sort()
    p95 = percentile(values, 95)
    return {
        "samples": len(values),
        "missing": missing,
        "p50": percentile(values, 50),
        "p95": p95,
        "max": values[-1] if values else None,
        "budget": budget,
        "breached": p95 is not None and p95 > budget,
    }


def summarise(
    contests: Iterable[ContestRecord],
    workflow_failures: int | list[Any],
    *,
    arming_budget: float = DEFAULT_ARMING_BUDGET_MS,
    resolution_budget: float = DEFAULT_RESOLUTION_BUDGET_MS,
    include_raw: bool = True,
) -> dict[str, Any]:
    """The summary document of the contract for these contests.

    ``workflow_failures`` is either the failure events (printed under ``raw``) or
    only their count, for renderings that never show ``raw``.
    """
    records = list(contests)
    arming: list[float] = []
    resolution: list[float] = []
    counts: list[float] = []
    capacity_over_two = 0
    for record in records:
        if record.arming is not None:
            arming.append(record.arming)
        if record.resolution is not None:
            resolution.append(record.resolution)
        if record.count is not None:
            counts.append(record.count)
        if record.capacity is not None and record.capacity > MULTI_ACTOR_OVER:
            capacity_over_two += 1
    counts.sort()
    failure_count = workflow_failures if isinstance(workflow_failures, int) else len(workflow_failures)
    observed = len(records)
    missing_resolution = observed - len(resolution)
    summary: dict[str, Any] = {
        "totals": {
            "contestsObserved": observed,
            "resolvedContests": observed - missing_resolution,
            "workflowFailures": failure_count,
        },
        "durations": {
            "arming": _duration_block(arming, observed - len(arming), arming_budget),
            "resolution": _duration_block(resolution, missing_resolution, resolution_budget),
        },
        "participants": {
            "samples": len(counts),
            "average": _js_sum(counts) / len(counts) if counts else None,
            "max": counts[-1] if counts else None,
            "multiActorContests": sum(1 for count in counts if count > MULTI_ACTOR_OVER),
            "capacityOverTwo": capacity_over_two,
        },
    }
    if include_raw:
        summary["raw"] = {
            "contests": [record.as_dict() for record in records],
            "workflowFailures": workflow_failures if isinstance(workflow_failures, list) else [],
        }
    return summary


class SummaryBuilder:
    """Folds events into per-contest records, optionally keeping only some hubs and a time window.

    ``since_ms`` is inclusive and ``until_ms`` exclusive; with a window set, an event
    whose ``timestamp`` is absent or unreadable cannot be placed and is left out.
    ``keep_failures=False`` counts workflow failures without keeping the events.
    """

    def __init__(
        self,
        *,
        hubs: Iterable[str] | None = None,
        since_ms: float | None = None,
        until_ms: float | None = None,
        keep_failures: bool = True,
    ) -> None:
        self.contests: dict[Hashable, ContestRecord] = {}
        self._failures: list[Any] = []
        self.failure_count = 0
        self.failures_by_hub: Counter[Any] = Counter()
        self.lines = 0
        self.unparsable = 0
        self.too_deep = 0
        self._hubs = frozenset(hubs) if hubs is not None else None
        self._since = since_ms
        self._until = until_ms
        self._keep_failures = keep_failures
        # Hub ids repeat on every event; sharing one string per hub keeps records small.
        self._hub_ids: dict[str, str] = {}

    def feed_lines(self, lines: Iterable[bytes]) -> None:
        """Fold NDJSON lines; blank and unparsable lines are skipped, as the monitor does.

        Lines nested deeper than ``MAX_DEPTH`` are skipped too and counted in ``too_deep``.
        """
        feed = self.feed_event
        # Records and decoded events hold no reference cycles, but each allocation
        # counts towards the cyclic collector, whose full passes over a heap of
        # millions of records made long logs quadratic; pause it while folding.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for line in lines:
                self.lines += 1
                if line.isspace() or not line:
                    continue
                event = decode_event_line(line)
                if event is None:
                    self.unparsable += 1
                    continue
                if event is _TOO_DEEP:
                    self.too_deep += 1
                    continue
                feed(event, line)
        finally:
            if collecting:
                gc.enable()

    @property
    def failures(self) -> Iterator[Any]:
        """The kept workflow failure events, as decoded from their lines, in input order."""
        for failure in self._failures:
            yield parse_event_line(failure) if type(failure) is bytes else failure

    def _selected(self, event: dict[str, Any]) -> bool:
        if self._hubs is not None:
            hub = event.get("hubId")
            if type(hub) is not str or hub not in self._hubs:
                return False
        if self._since is not None or self._until is not None:
            moment = parse_time_ms(event.get("timestamp"))
            if moment is None:
                return False
            if self._since is not None and moment < self._since:
                return False
            if self._until is not None and moment >= self._until:
                return False
        return True

    def feed_event(self, event: Any, line: bytes | None = None) -> None:
        """Fold one decoded event; anything that is not a contest event is ignored.

        ``line`` is the event's source text: a kept workflow failure is stored as
        those bytes, a third of the size of the decoded dict, and decoded for output.
        """
        if type(event) is not dict:
            return
        if (self._hubs is not None or self._since is not None or self._until is not None) and not (
            self._selected(event)
        ):
            return
        message = event.get("message")
        if message == WORKFLOW_FAILED:
            # Counted apart whether or not it names a contest, and it opens none.
            self.failure_count += 1
            hub = event.get("hubId")
            self.failures_by_hub[_hub_key(hub)] += 1
            if self._keep_failures:
                self._failures.append(event if line is None else line)
            return
        if type(message) is not str or not message.startswith(PREFIX):
            return
        contest_id = event.get("contestId")
        if not _js_truthy(contest_id):
            return
        key = _contest_key(contest_id)
        record = self.contests.get(key)
        if record is None:
            # Any contest event opens the contest (workflowStarted too); ids come from the first.
            hub = event.get("hubId")
            room = event.get("roomId")
            if type(hub) is str:
                hub = self._hub_ids.setdefault(hub, hub)
            record = ContestRecord(
                contest_id,
                hub if _js_truthy(hub) else None,
                room if _js_truthy(room) else None,
            )
            self.contests[key] = record
        if message in (LAUNCHED, RESOLVED):
            # A later number replaces an earlier one; a missing value keeps it.
            value = finite_non_negative(event.get("armingDurationMs"))
            if value is not None:
                record.arming = value
            value = finite_non_negative(event.get("participantCount"))
            if value is not None:
                record.count = value
            value = finite_non_negative(event.get("participantCapacity"))
            if value is not None:
                record.capacity = value
            if message == RESOLVED:
                value = finite_non_negative(event.get("resolutionDurationMs"))
                if value is not None:
                    record.resolution = value
                outcome = event.get("outcomeTier")
                if _js_truthy(outcome):
                    if record.outcomes is None:
                        record.outcomes = [outcome]
                    else:
                        record.outcomes.append(outcome)

    def build(
        self,
        *,
        arming_budget: float = DEFAULT_ARMING_BUDGET_MS,
        resolution_budget: float = DEFAULT_RESOLUTION_BUDGET_MS,
        include_raw: bool = True,
    ) -> dict[str, Any]:
        """The contract's summary document over everything fed so far."""
        keep = include_raw and self._keep_failures
        failures: int | list[Any] = list(self.failures) if keep else self.failure_count
        return summarise(
            self.contests.values(),
            failures,
            arming_budget=arming_budget,
            resolution_budget=resolution_budget,
            include_raw=include_raw,
        )

    def by_hub(
        self,
        *,
        arming_budget: float = DEFAULT_ARMING_BUDGET_MS,
        resolution_budget: float = DEFAULT_RESOLUTION_BUDGET_MS,
    ) -> dict[Any, dict[str, Any]]:
        """One summary (without ``raw``) per hub, hubs in first-seen order."""
        groups: dict[Any, list[ContestRecord]] = {}
        for record in self.contests.values():
            groups.setdefault(_hub_key(record.hub_id), []).append(record)
        for hub in self.failures_by_hub:
            groups.setdefault(hub, [])
        return {
            hub: summarise(
                records,
                self.failures_by_hub.get(hub, 0),
                arming_budget=arming_budget,
                resolution_budget=resolution_budget,
                include_raw=False,
            )
            for hub, records in groups.items()
        }


def _hub_key(hub: object) -> Any:
    """Group key for a hub id: strings as they are, no hub as None, anything else as its JSON."""
    if not _js_truthy(hub):
        return None
    if type(hub) is str:
        return hub
    try:
        return json.dumps(hub, sort_keys=True)
    except RecursionError:  # json.dumps recurses; a parsed hub may nest 1024 levels
        return "(hub nested too deeply to print)"
