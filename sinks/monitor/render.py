"""Renderings of the monitor summary: the contract's text, its JSON and a per-hub table.

The text and JSON must match what the JavaScript monitor printed byte for byte, so
numbers go through ``Number.prototype.toString`` / ``toFixed(2)`` equivalents here
rather than Python's ``repr`` (``240`` not ``240.0``, ``1e-7`` not ``1e-07``).
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = [
    "LazyArray",
    "js_number",
    "js_to_fixed",
    "render_json",
    "render_table",
    "render_text",
    "write_json",
]

_CENTS = Decimal("0.01")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')  # what JSON.stringify escapes
_EXACT = float(2**53)
_encode_basestring: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.py_encode_basestring
)


def js_number(value: float | int) -> str:
    """``String(value)`` for a JavaScript number (shortest round-trip digits, JS exponent rules)."""
    number = float(value)
    # Fast paths for the usual durations and counts: exact integers below 2**53 and
    # reprs without an exponent are already what JavaScript prints.
    if number.is_integer() and -_EXACT < number < _EXACT:
        return str(int(number))
    if math.isfinite(number):
        text = repr(number)
        if "e" not in text:
            return text
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    # repr() gives the same shortest digits as ECMAScript; only the layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + (f".{digits[1:]}" if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def js_to_fixed(value: float, places: int = 2) -> str:
    """``value.toFixed(places)``: exact decimal value, ties away from zero (not to even)."""
    number = float(value) + 0.0
    if not math.isfinite(number) or abs(number) >= 1e21:
        return js_number(number)
    quantum = _CENTS if places == 2 else Decimal(1).scaleb(-places)
    return str(Decimal(number).quantize(quantum, rounding=ROUND_HALF_UP))


def _fixed_or_na(value: float | None) -> str:
    return "n/a" if value is None else js_to_fixed(value)


def render_text(summary: dict[str, Any]) -> str:
    """The contract's text form, without a trailing newline."""
    totals = summary["totals"]
    lines = [
        "Contest Workflow Load Summary",
        "============================",
        f"Contests observed: {totals['contestsObserved']}",
        f"Resolved contests: {totals['resolvedContests']} (workflow failures: {totals['workflowFailures']})",
    ]
    for label, block in (
        ("Arming", summary["durations"]["arming"]),
        ("Resolution", summary["durations"]["resolution"]),
    ):
        if block["samples"] > 0:
            warning = " ⚠" if block["breached"] else ""
            lines.append(
                f"{label} duration p95: {_fixed_or_na(block['p95'])} ms"
                f" (budget {js_number(block['budget'])} ms){warning}"
            )
            lines.append(
                f"{label} duration p50 / max: {_fixed_or_na(block['p50'])} ms / {_fixed_or_na(block['max'])} ms"
            )
            if block["missing"] > 0:
                lines.append(f"{label} samples missing: {block['missing']}")
        else:
            lines.append(f"{label} duration samples: none")
    participants = summary["participants"]
    if participants["samples"] > 0:
        peak = "n/a" if participants["max"] is None else js_number(participants["max"])
        lines.append(f"Average participants: {_fixed_or_na(participants['average'])} (max {peak})")
        lines.append(
            f"Contests with >2 participants: {participants['multiActorContests']} / {participants['samples']}"
        )
        if participants["capacityOverTwo"] > 0:
            lines.append(f"Contest capacity requests >2 participants: {participants['capacityOverTwo']}")
    else:
        lines.append("Participant data: none")
    return "\n".join(lines)


def _js_string(text: str) -> str:
    # json.dumps escapes the same characters as JSON.stringify, except lone surrogates,
    # which JSON.stringify writes as \udxxx and Python could not encode at all.
    if not _NEEDS_ESCAPE.search(text):
        return f'"{text}"'
    encoded = _encode_basestring(text)
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", encoded)


def _js_keys(mapping: dict[str, Any]) -> list[str]:
    # JavaScript objects list array-index keys first, ascending, then the rest as inserted.
    indexes = [
        key for key in mapping if key[:1].isdigit() and _ARRAY_INDEX.fullmatch(key) and int(key) < 2**32 - 1
    ]
    if not indexes:
        return list(mapping)
    index_set = set(indexes)
    rest = [key for key in mapping if key not in index_set]
    return sorted(indexes, key=int) + rest


class LazyArray:
    """A JSON array rendered item by item, so a large ``raw`` section is never built whole."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


class _Chunks(list[str]):
    """Output fragments; with a writer they are handed over every few thousand."""

    def __init__(self, write: Callable[[str], object] | None = None) -> None:
        super().__init__()
        self.write = write

    def spill(self) -> None:
        if self.write is not None and len(self) > 4096:
            self.write("".join(self))
            self.clear()


_END: Any = object()


def _write_json(value: Any, indent: str, out: _Chunks) -> None:
    # A loop over an explicit stack rather than recursion: parsed input may nest 1024
    # levels (orjson's limit), past Python's recursion limit once inside the summary.
    # A frame is [keys or items, indent of the container, the object (None for an array),
    # items written so far]; the bottom frame holds only ``value``, at depth 0.
    stack: list[list[Any]] = [[iter((value,)), indent, None, -1]]
    while stack:
        frame = stack[-1]
        items, outer, mapping, count = frame
        if count > 0 and mapping is None:
            out.spill()  # after each whole array item
        item = next(items, _END)
        if item is _END:
            stack.pop()
            if count >= 0:
                out.append(f"\n{outer}}}" if mapping is not None else (f"\n{outer}]" if count else "[]"))
            continue
        if count < 0:  # the bottom frame: the value itself, at the caller's indent
            inner = outer
        else:
            inner = outer + "  "
            if mapping is not None:
                out.append(f"{',' if count else ''}\n{inner}{_js_string(item)}: ")
                item = mapping[item]
            else:
                out.append(f",\n{inner}" if count else f"[\n{inner}")
            frame[3] = count + 1
        kind = type(item)
        if kind is str:
            out.append(_js_string(item))
        elif item is None or item is True or item is False:
            out.append("null" if item is None else ("true" if item else "false"))
        elif kind is float and item.is_integer() and -_EXACT < item < _EXACT:
            out.append(str(int(item)))
        elif isinstance(item, int | float):
            try:
                number = float(item)
            except OverflowError:
                number = math.inf
            out.append(js_number(number) if math.isfinite(number) else "null")
        elif isinstance(item, dict):
            by_name = {str(key): child for key, child in item.items()}
            keys = _js_keys(by_name)
            if keys:
                out.append("{")
                stack.append([iter(keys), inner, by_name, 0])
            else:
                out.append("{}")
        elif isinstance(item, list | tuple | LazyArray):
            stack.append([iter(item.items if isinstance(item, LazyArray) else item), inner, None, 0])
        else:
            raise TypeError(f"cannot render {type(item).__name__} as JSON")


def render_json(summary: Any) -> str:
    """``JSON.stringify(summary, null, 2)``, without a trailing newline."""
    out = _Chunks()
    _write_json(summary, "", out)
    return "".join(out)


def write_json(summary: Any, write: Callable[[str], object]) -> None:
    """Stream what :func:`render_json` returns to ``write``, a few thousand fragments at a time."""
    out = _Chunks(write)
    _write_json(summary, "", out)
    write("".join(out))


def _duration_cell(value: float | None, breached: bool = False) -> Text:
    if value is None:
        return Text("—", style="dim")
    text = f"{js_to_fixed(value)}{' ⚠' if breached else ''}"
    return Text(text, style="bold red" if breached else "")


def _row(name: str, summary: dict[str, Any]) -> list[Text | str]:
    # Hub ids come from the input: a Text cell prints them as they are, never as markup.
    arming = summary["durations"]["arming"]
    resolution = summary["durations"]["resolution"]
    participants = summary["participants"]
    average = participants["average"]
    return [
        Text(name),
        str(summary["totals"]["contestsObserved"]),
        str(summary["totals"]["resolvedContests"]),
        str(summary["totals"]["workflowFailures"]),
        _duration_cell(arming["p50"]),
        _duration_cell(arming["p95"], arming["breached"]),
        _duration_cell(arming["max"]),
        _duration_cell(resolution["p50"]),
        _duration_cell(resolution["p95"], resolution["breached"]),
        _duration_cell(resolution["max"]),
        "—" if average is None else js_to_fixed(average),
        f"{participants['multiActorContests']} / {participants['samples']}",
        str(participants["capacityOverTwo"]),
    ]


def render_table(summary: dict[str, Any], hubs: dict[Any, dict[str, Any]]) -> Table:
    """A per-hub breakdown with a totals row; p95 cells over budget are flagged."""
    arming_budget = js_number(summary["durations"]["arming"]["budget"])
    resolution_budget = js_number(summary["durations"]["resolution"]["budget"])
    table = Table(
        title="Contest Workflow Load Summary",
        caption=f"durations in ms; budgets: arming p95 {arming_budget}, resolution p95 {resolution_budget}",
    )
    table.add_column("Hub", no_wrap=True)
    for header in (
        "Contests",
        "Resolved",
        "Failed",
        "Arm p50",
        "Arm p95",
        "Arm max",
        "Res p50",
        "Res p95",
        "Res max",
        "Avg part",
        ">2 part",
        "Cap >2",
    ):
        table.add_column(header, justify="right", no_wrap=True)
    for hub, hub_summary in hubs.items():
        table.add_row(*_row("(no hub)" if hub is None else str(hub), hub_summary))
    table.add_section()
    table.add_row(*_row("Total", summary), style="bold")
    return table
