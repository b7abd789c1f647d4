"""What the engine hands the agent per record (:class:`Outputs`), and what a record changed for
one hub until its state is written (:class:`Touched`)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Outputs", "Touched"]


@dataclass
class Outputs:
    dlq: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)  # None: delete the key
    # The changelog partition of each write (the input partition its hub or partition key is on).
    write_partitions: list[int] = field(default_factory=list)
    events: int = 0
    skipped: bool = False
    newest_event_ms: float | None = None
    # Staged mode only: processing the record failed and the caches (with every record staged
    # since the last flush) were dropped; read again from ``applied + 1``, this record included.
    rewound: bool = False


class Touched:
    """What one record changed for one hub: window indexes, and keys to delete at once."""

    __slots__ = ("deletes", "windows")

    def __init__(self) -> None:
        self.windows: set[int] = set()
        self.deletes: list[str] = []
