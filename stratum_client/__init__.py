"""Typed Python client of Stratum CDP (sync and async, httpx). See docs/CLIENT.md."""

from stratum_client.client import (
    ENDPOINTS,
    AsyncStratumClient,
    Identifier,
    IngestResult,
    NativeEvent,
    StratumAPIError,
    StratumClient,
)

__all__ = ["ENDPOINTS", "AsyncStratumClient", "Identifier", "IngestResult", "NativeEvent", "StratumAPIError",
           "StratumClient"]
