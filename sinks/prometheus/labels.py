"""Bounded label values: the ``hub`` cardinality cap and the label-length bound.

:class:`LabelCap` maps raw values (hub ids) to label values. The first ``max_values`` distinct
values seen keep their own label for the life of the process; every further value folds into
``"_other"`` and is counted once in :attr:`LabelCap.folded`. A slot is never given back (not even
when a rebalance moves a hub to another worker): a hub's label must not flip between itself and
``_other``, or its counters would go backwards. Reserved values (``"_all"``, ``"_other"``) map to
themselves and never count toward the cap.

Label values may hold any string, but :func:`bound_label` bounds their length (a 10 kB hub id
does not blow up the page): a value longer than ``max_length`` characters is cut and suffixed with
``~`` and 16 hex digits of a BLAKE2b hash of the full value, so distinct long ids stay distinct.
Lone surrogates (which cannot be encoded as UTF-8, and would make every scrape fail) are replaced
by U+FFFD, with the same hash suffix. The empty string becomes ``"_empty"`` (an empty label value
means "no label" to Prometheus).

Thread safety: the fast path (an already labelled value) is a single dict lookup; assigning a
new value takes a lock, so the worker thread and the scrape thread can both call :meth:`label`.
Folded values are remembered by their ``hash()`` (8 bytes each, whatever the id's length).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Iterable

__all__ = ["ALL", "DEFAULT_MAX_LABEL_LENGTH", "EMPTY", "OTHER", "LabelCap", "bound_label"]

ALL = "_all"
OTHER = "_other"
EMPTY = "_empty"
DEFAULT_MAX_LABEL_LENGTH = 128
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


class LabelCap:
    """Map raw values to at most ``max_values`` distinct label values plus ``other``.

    ``preset`` values are labelled up front (they do not count toward the cap either); use it for
    known enumerations (event types, DLQ reasons) so they always keep their label.
    """

    def __init__(
        self,
        max_values: int = 500,
        *,
        max_length: int = DEFAULT_MAX_LABEL_LENGTH,
        reserved: Iterable[str] = (ALL, OTHER),
        preset: Iterable[str] = (),
        other: str = OTHER,
    ) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be >= 1, got {max_values}")
        self.max_values = max_values
        self.max_length = max_length
        self.other = other
        self._labels: dict[str, str] = {v: v for v in (*reserved, other)}
        for value in preset:
            self._labels[value] = bound_label(value, max_length)
        self._kept = 0
        self._folded: set[int] = set()
        self._lock = threading.Lock()

    def label(self, value: str) -> str:
        """The label value for ``value`` (assigning a slot, or folding into ``other``)."""
        label = self._labels.get(value)
        if label is not None:
            return label
        return self._assign(value)

    def _assign(self, value: str) -> str:
        if self._kept >= self.max_values:  # full: no lock needed (set.add is atomic)
            self._folded.add(hash(value))
            return self.other
        with self._lock:
            label = self._labels.get(value)
            if label is not None:
                return label
            if self._kept < self.max_values:
                label = bound_label(value, self.max_length)
                self._labels[value] = label
                self._kept += 1
                return label
            self._folded.add(hash(value))
            return self.other

    def kept_of(self, values: Collection[str]) -> list[tuple[str, str]]:
        """``(value, label)`` for each of ``values`` that has its own (or a preset) label, for a
        scrape's snapshot hubs. While the cap has room, unseen values are given slots first (in
        ``values`` order, as :meth:`label` would); values beyond the cap are left out and, unlike
        :meth:`label`, not recorded as folded.

        Cost is O(labelled values), not O(values): with the cap full, 100,000 snapshot hubs cost a
        C-level set intersection with the <= ``max_values`` labelled ones, no Python loop over them.
        """
        labels = self._labels
        if self._kept < self.max_values:
            for value in values:  # assign free slots in order; stops as soon as the cap is full
                if value not in labels:
                    self._assign(value)
                    if self._kept >= self.max_values:
                        break
        other = self.other
        if len(values) <= len(labels):
            candidates: Collection[str] = values
        else:
            with self._lock:  # the worker thread may be adding labels
                candidates = labels.keys() & values
        kept: list[tuple[str, str]] = []
        for value in candidates:
            label = labels.get(value)
            if label is not None and label != other:
                kept.append((value, label))
        return kept

    def peek(self, value: str) -> str | None:
        """The label ``value`` already has (``other`` when folded before), or None if never seen."""
        label = self._labels.get(value)
        if label is None and hash(value) in self._folded:
            return self.other
        return label

    @property
    def kept(self) -> int:
        """Distinct values holding their own label (reserved and preset ones not counted)."""
        return self._kept

    @property
    def folded(self) -> int:
        """Distinct values folded into ``other``."""
        return len(self._folded)
