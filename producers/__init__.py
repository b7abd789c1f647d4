"""Hub-side producers: the embeddable publisher and the load generator."""

from __future__ import annotations

from producers.exceptions import InvalidEventError
from producers.publisher import ContestPublisher, iso_timestamp
from producers.settings import PublisherSettings

__all__ = ["ContestPublisher", "InvalidEventError", "PublisherSettings", "iso_timestamp"]
