"""Bounded label values: the ``hub`` cardinality cap, idle slots given back, the label-length bound.

:class:`LabelCap` maps raw values (hub ids) to label values. At most ``max_values`` distinct values
hold a label of their own (a *slot*) at a time; while the slots are taken, every further value
folds into ``"_other"`` and is counted once in :attr:`LabelCap.folded`.

Idle slots are given back. The exporter's collector calls :meth:`LabelCap.tick` once per scrape;
a value *uses* its slot when :meth:`label` is called for it (every counter update) or when
:meth:`kept_of` returns it (the scrape's snapshot holds the hub). The tick that ends
``idle_ticks`` scrape intervals in a row without any use frees the slot (``idle_ticks=None``:
never). The next new value (or the same one, when it comes back) can then take it. Folding is
decided per call, so a value folded while the cap was full gets a slot as soon as one is free.

What this means for the series (docs/metrics.md): a freed hub's series leave the page (the
collector only exports labels currently held, and has
:meth:`~sinks.prometheus.counters.PipelineCounters.forget_hubs` drop their rows); values counted
into ``_other`` stay there, and :attr:`folded` never goes down, so every counter still on the page
is monotonic. A freed hub that comes back starts its series again from 0 (a counter reset, which
``rate()``/``increase()`` handle).

Folded values are remembered (to count each one once in :attr:`folded`, and for :meth:`peek`),
but at most ``max_folded`` of them: beyond it the least recently folded one is forgotten and
counted in :attr:`forgotten`, so random ids from a hostile or buggy fleet cannot grow the memory.
A forgotten value that folds again counts again, so :attr:`folded` is exact (distinct values)
until :attr:`forgotten` leaves 0, and an upper bound of it after.

Raw values never produce the cap's own label values: with ``escape_prefix`` (default ``"hub:"``)
a value that starts with ``_`` or with the prefix, or equals a reserved value or ``other``, is
exported as ``prefix + value`` (a real hub named ``_all`` becomes ``hub:_all``, ``hub:x`` becomes
``hub:hub:x``, so the mapping stays one-to-one). ``_all``, ``_other`` and ``_empty`` are the
exporter's: ``_all`` is the aggregate the collector labels itself (the snapshot's ``"_all"`` key,
skipped by :meth:`kept_of`), ``_other`` the folded hubs, ``_empty`` the empty hub id. With
``escape_prefix=None`` reserved values and ``other`` map to themselves and take no slot (the
behaviour before hub ids were escaped).

Label values may hold any string, but :func:`bound_label` bounds their length (a 10 kB hub id
does not blow up the page): a value longer than ``max_length`` characters is cut and suffixed with
``~`` and 16 hex digits of a BLAKE2b hash of the full value, so distinct long ids stay distinct.
Lone surrogates (which cannot be encoded as UTF-8, and would make every scrape fail) are replaced
by U+FFFD, with the same hash suffix. The empty string becomes ``"_empty"`` (an empty label value
means "no label" to Prometheus).

Thread safety: the fast path (a value holding a slot) is a dict lookup and an attribute store;
assigning, folding bookkeeping and freeing take a lock, so the worker thread and the scrape
threads can all call in. Folded values are remembered by their ``hash()`` (a fixed size each,
whatever the id's length); remembering a new one takes the lock, folding one already remembered
only moves it to the LRU's end (one C call, atomic under the GIL).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable

__all__ = [
    "ALL",
    "DEFAULT_IDLE_TICKS",
    "DEFAULT_MAX_FOLDED",
    "DEFAULT_MAX_LABEL_LENGTH",
    "EMPTY",
    "ESCAPE_PREFIX",
    "OTHER",
    "LabelCap",
    "bound_label",
]

ALL = "_all"
OTHER = "_other"
EMPTY = "_empty"
ESCAPE_PREFIX = "hub:"
DEFAULT_MAX_LABEL_LENGTH = 128
# Scrapes without use before a slot is freed: 10 minutes at the shipped 15 s scrape interval.
DEFAULT_IDLE_TICKS = 40
# Folded values remembered (~140 bytes each: ~14 MB): every folded hub of the 100,000-hub fleet the
# exporter is sized for, so the folded count stays exact there (docs/metrics.md).
DEFAULT_MAX_FOLDED = 100_000
_HASH_CHARS = 16  # blake2b digest_size=8 -> 16 hex digits


def _suffix(value: str) -> str:
    raw = value.encode("utf-8", "surrogatepass")
    return "~" + hashlib.blake2b(raw, digest_size=_HASH_CHARS // 2).hexdigest()


def bound_label(value: str, max_length: int = DEFAULT_MAX_LABEL_LENGTH) -> str:
    """``value`` as a label value of at most ``max_length`` characters, valid UTF-8, not empty."""
    if not value:
        return EMPTY
    out = value
    changed = False
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in out)
        changed = True
    if len(out) > max_length:
        out = out[: max(1, max_length - _HASH_CHARS - 1)]
        changed = True
    if changed:
        out += _suffix(value)
    return out


class _Slot:
    """A value's label, the tick of its last use, and whether it is fixed (never freed)."""

    __slots__ = ("fixed", "label", "used")

    def __init__(self, label: str, used: int, fixed: bool = False) -> None:
        self.label = label
        self.used = used
        self.fixed = fixed


class LabelCap:
    """Map raw values to at most ``max_values`` distinct label values at a time, plus ``other``.

    ``preset`` values are labelled up front and keep their label for good (they take no slot
    either); use it for known enumerations (event types, DLQ reasons). ``idle_ticks``: see the
    module docstring (None: slots are never freed). ``max_folded``: folded values remembered at
    most (the least recently folded are forgotten first, see the module docstring).
    """

    def __init__(
        self,
        max_values: int = 500,
        *,
        max_length: int = DEFAULT_MAX_LABEL_LENGTH,
        reserved: Iterable[str] = (ALL, OTHER),
        preset: Iterable[str] = (),
        other: str = OTHER,
        escape_prefix: str | None = ESCAPE_PREFIX,
        idle_ticks: int | None = DEFAULT_IDLE_TICKS,
        max_folded: int = DEFAULT_MAX_FOLDED,
    ) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be >= 1, got {max_values}")
        if max_folded < 1:
            raise ValueError(f"max_folded must be >= 1, got {max_folded}")
        if idle_ticks is not None and idle_ticks < 1:
            raise ValueError(f"idle_ticks must be >= 1 (or None), got {idle_ticks}")
        if escape_prefix == "":
            raise ValueError("escape_prefix must not be empty (use None for no prefix)")
        self.max_values = max_values
        self.max_length = max_length
        self.other = other
        self.escape_prefix = escape_prefix
        self.idle_ticks = idle_ticks
        self.max_folded = max_folded
        self._reserved = frozenset((*reserved, other))
        # One dict for the fast path: fixed labels (presets and, without a prefix, the reserved
        # values themselves) and the slots.
        self._slots: dict[str, _Slot] = {}
        if escape_prefix is None:
            for value in self._reserved:
                self._slots[value] = _Slot(value, 0, fixed=True)
        for value in preset:
            self._slots[value] = _Slot(bound_label(self._escape(value), max_length), 0, fixed=True)
        self._n_fixed = len(self._slots)
        self._limit = self._n_fixed + max_values  # len(self._slots) when every slot is taken
        self._always_held = frozenset((*self._reserved, *(slot.label for slot in self._slots.values())))
        self._tick = 0
        self._released = 0
        # hash(value) of folded values, least recently folded first (an LRU of at most max_folded).
        self._folded: OrderedDict[int, None] = OrderedDict()
        self._folded_total = 0
        self._forgotten = 0
        self._lock = threading.Lock()

    def _escape(self, value: str) -> str:
        prefix = self.escape_prefix
        if prefix is not None and (value.startswith(("_", prefix)) or value in self._reserved):
            return prefix + value
        return value

    def label(self, value: str) -> str:
        """The label value for ``value`` (assigning a slot, or folding into ``other``); a use."""
        slot = self._slots.get(value)
        if slot is not None:
            # Unlocked: a tick() freeing this slot right now (after idle_ticks idle scrapes) makes
            # this one call return a label no longer held; its counts go to that label's row, which
            # the collector drops right after the tick (then they are lost) or has already dropped
            # (then the row is hidden, not exported, and continues if the value gets a slot again).
            slot.used = self._tick
            return slot.label
        return self._assign(value)

    def _assign(self, value: str) -> str:
        if len(self._slots) >= self._limit:
            key = hash(value)
            # Full, and folded before (the common case for folded hubs): only refresh its place in
            # the LRU, without the lock, which would double this path's cost.
            if key in self._folded and self._refresh(key):
                return self.other
        with self._lock:
            slot = self._slots.get(value)
            if slot is not None:
                slot.used = self._tick
                return slot.label
            if len(self._slots) < self._limit:
                label = bound_label(self._escape(value), self.max_length)
                self._slots[value] = _Slot(label, self._tick)
                return label
            self._fold(hash(value))
            return self.other

    def _refresh(self, key: int) -> bool:
        """Move a remembered folded value to the LRU's end; False when it is not remembered (it
        was forgotten by another thread since the caller's check). Unlocked: ``move_to_end`` with
        an int key is one C call under the GIL, so it never sees a half-done eviction."""
        try:
            self._folded.move_to_end(key)
        except KeyError:
            return False
        return True

    def _fold(self, key: int) -> None:
        """Remember a folded value (under the lock): most recent last, the oldest forgotten."""
        folded = self._folded
        if key in folded:
            folded.move_to_end(key)
            return
        folded[key] = None
        self._folded_total += 1
        if len(folded) > self.max_folded:
            folded.popitem(last=False)
            self._forgotten += 1

    def kept_of(self, values: Collection[str], *, skip: Collection[str] = ()) -> list[tuple[str, str]]:
        """``(value, label)`` for each of ``values`` that holds a slot (or a fixed label other than
        ``other``), for a scrape's snapshot hubs; each one returned counts as a use. While the cap
        has room, values without a slot are given one first (in ``values`` order, as
        :meth:`label` would); values beyond the cap are left out and, unlike :meth:`label`, not
        recorded as folded. ``skip``: values the caller labels itself (the ``"_all"`` aggregate).

        Cost is O(labelled values), not O(values): with the cap full, 100,000 snapshot hubs cost a
        C-level set intersection with the <= ``max_values`` labelled ones, no Python loop over them.
        """
        slots, limit = self._slots, self._limit
        if len(slots) < limit:
            for value in values:  # assign free slots in order; stops as soon as the cap is full
                if value not in slots and value not in skip:
                    self._assign(value)
                    if len(slots) >= limit:
                        break
        tick, other = self._tick, self.other
        kept: list[tuple[str, str]] = []
        if len(values) <= len(slots):
            candidates: Iterable[str] = values
        else:
            with self._lock:  # the worker thread may be adding slots
                candidates = slots.keys() & values
        for value in candidates:
            slot = slots.get(value)
            if slot is not None and value not in skip and slot.label != other:
                slot.used = tick
                kept.append((value, slot.label))
        return kept

    def tick(self) -> list[str]:
        """One scrape: free the slots unused for ``idle_ticks`` whole intervals between ticks;
        returns their labels (already left out of :meth:`held`)."""
        with self._lock:
            self._tick += 1
            if self.idle_ticks is None:
                return []
            oldest = self._tick - self.idle_ticks  # used before this tick: idle for idle_ticks
            idle = [value for value, slot in self._slots.items() if slot.used < oldest and not slot.fixed]
            self._released += len(idle)
            return [self._slots.pop(value).label for value in idle]

    def held(self) -> frozenset[str]:
        """The label values a page may show now: those of the slots, the fixed labels, ``other``
        and the reserved values."""
        with self._lock:
            return self._always_held.union([slot.label for slot in self._slots.values()])

    def peek(self, value: str) -> str | None:
        """The label ``value`` holds, ``other`` when it holds none and was folded before (and is
        still remembered, see ``max_folded``), None otherwise (not a use)."""
        slot = self._slots.get(value)
        if slot is not None:
            return slot.label
        return self.other if hash(value) in self._folded else None

    @property
    def kept(self) -> int:
        """Distinct values holding a slot now (fixed ones not counted)."""
        return len(self._slots) - self._n_fixed

    @property
    def folded(self) -> int:
        """Values folded into ``other`` while not remembered as folded (never goes down): the
        distinct values folded at least once while :attr:`forgotten` is 0, an upper bound of
        that after (a forgotten value that folds again counts again)."""
        return self._folded_total

    @property
    def forgotten(self) -> int:
        """Folded values forgotten to keep at most ``max_folded`` remembered (never goes down)."""
        return self._forgotten

    @property
    def remembered(self) -> int:
        """Folded values remembered now (at most ``max_folded``)."""
        return len(self._folded)

    @property
    def released(self) -> int:
        """Slots freed so far (a value freed twice counts twice)."""
        return self._released

    @property
    def ticks(self) -> int:
        """Ticks (scrapes) so far."""
        return self._tick
