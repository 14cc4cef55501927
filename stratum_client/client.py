"""Typed HTTP clients of Stratum CDP, sync (``StratumClient``) and async
(``AsyncStratumClient``), built on httpx.

Both share one table of endpoints (``ENDPOINTS``: method, path template, response model)
and the pure request builders below, so they cannot disagree; tests/test_client.py checks
the table against the read API's OpenAPI document. Response bodies are returned as the
TypedDicts of ``stratum_client.models`` (generated from the same document).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import httpx

from stratum_client import models

# name -> (HTTP method, path template, response model in stratum_client.models)
ENDPOINTS: dict[str, tuple[str, str, str]] = {
    "get_profile": ("GET", "/api/v1/cdp/profiles/{profile_id}", "Profile"),
    "find_profile": ("GET", "/api/v1/cdp/profiles", "Profile"),
    "profile_events": ("GET", "/api/v1/cdp/profiles/{profile_id}/events", "EventPage"),
    "profile_graph": ("GET", "/api/v1/cdp/profiles/{profile_id}/graph", "Graph"),
    "get_consents": ("GET", "/api/v1/cdp/profiles/{profile_id}/consents", "Consents"),
    "put_consents": ("PUT", "/api/v1/cdp/profiles/{profile_id}/consents", "Consents"),
    "erase_profile": ("DELETE", "/api/v1/cdp/profiles/{profile_id}", "Erasure"),
    "event_status": ("GET", "/api/v1/cdp/events/{event_id}", "EventStatus"),
    "list_sources": ("GET", "/api/v1/cdp/sources", "SourceList"),
    "create_source": ("POST", "/api/v1/cdp/sources", "SourceWithKey"),
    "stats": ("GET", "/api/v1/cdp/stats", "Stats"),
}
INGEST_EVENTS_PATH = "/api/v1/cdp/events"

IdentifierType = Literal["email", "phone", "device_id", "anonymous_id", "external_id"]


class Identifier(TypedDict):
    type: IdentifierType
    value: str
    signature: NotRequired[str]


class NativeEvent(TypedDict):
    """One event of the native batch (docs/EVENT_SPEC.md)."""

    event_name: str
    event_time: str
    identifiers: list[Identifier]
    idempotency_key: NotRequired[str]
    properties: NotRequired[dict[str, Any]]
    context: NotRequired[dict[str, Any]]
    traits: NotRequired[dict[str, Any]]
    consent: NotRequired[dict[str, bool]]


class IngestResult(TypedDict):
    """The answer of ``POST /api/v1/cdp/events`` (docs/API.md); ``results`` has one entry per event."""

    accepted: int
    rejected: int
    duplicates: int
    emq: dict[str, Any]
    results: list[dict[str, Any]]


class StratumAPIError(Exception):
    """A 4xx or 5xx answer: ``status``, and the body's ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    ingest: bool = False


def _call(name: str, path_params: dict[str, str] | None = None, *, params: dict[str, Any] | None = None,
          json: Any = None) -> _Call:
    method, template, _model = ENDPOINTS[name]
    path = template.format(**{k: _quote(v) for k, v in (path_params or {}).items()})
    return _Call(method, path, {k: v for k, v in (params or {}).items() if v is not None}, json)


def _quote(segment: str) -> str:
    return quote(str(segment), safe="")


def _result(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("code", "http_error") if isinstance(body, dict) else "http_error"
        message = body.get("message", response.reason_phrase) if isinstance(body, dict) else response.text[:200]
        raise StratumAPIError(response.status_code, code, message, body)
    return response.json()


class _Calls:
    """The request of each operation; the sync and async clients only execute them."""

    @staticmethod
    def get_profile(profile_id: str) -> _Call:
        return _call("get_profile", {"profile_id": profile_id})

    @staticmethod
    def find_profile(identifier_type: str | None, identifier_value: str | None, identifier_hash: str | None) -> _Call:
        return _call("find_profile", params={"identifier_type": identifier_type,
                                             "identifier_value": identifier_value, "identifier_hash": identifier_hash})

    @staticmethod
    def profile_events(profile_id: str, limit: int | None, cursor: str | None) -> _Call:
        return _call("profile_events", {"profile_id": profile_id}, params={"limit": limit, "cursor": cursor})

    @staticmethod
    def send_events(events: list[NativeEvent]) -> _Call:
        return _Call("POST", INGEST_EVENTS_PATH, json={"events": events}, ingest=True)


class StratumClient:
    """Synchronous client. ``read_url`` and ``api_key`` (a tenant key) for the read API;
    ``ingest_url`` and ``write_key`` (a source's key) to send events. Use as a context
    manager, or call ``close()``. ``transport`` is passed to httpx (tests, proxies)."""

    def __init__(self, read_url: str | None = None, api_key: str | None = None, *, ingest_url: str | None = None,
                 write_key: str | None = None, timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._read = httpx.Client(base_url=read_url or "", timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._ingest = httpx.Client(base_url=ingest_url or "", timeout=timeout_s, transport=transport,
                                    headers={"Authorization": f"Bearer {write_key}"} if write_key else {})

    def __enter__(self) -> StratumClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._read.close()
        self._ingest.close()

    def _do(self, call: _Call) -> Any:
        client = self._ingest if call.ingest else self._read
        return _result(client.request(call.method, call.path, params=call.params, json=call.json))

    def send_events(self, events: list[NativeEvent]) -> IngestResult:
        """POST a native batch (1..1,000 events). A batch whose every event is rejected raises (400)."""
        return cast(IngestResult, self._do(_Calls.send_events(events)))

    def get_profile(self, profile_id: str) -> models.Profile:
        return cast(models.Profile, self._do(_Calls.get_profile(profile_id)))

    def find_profile(self, identifier_type: str | None = None, identifier_value: str | None = None, *,
                     identifier_hash: str | None = None) -> models.Profile:
        return cast(models.Profile, self._do(_Calls.find_profile(identifier_type, identifier_value, identifier_hash)))

    def profile_events(self, profile_id: str, *, limit: int | None = None, cursor: str | None = None
                       ) -> models.EventPage:
        return cast(models.EventPage, self._do(_Calls.profile_events(profile_id, limit, cursor)))

    def profile_graph(self, profile_id: str) -> models.Graph:
        return cast(models.Graph, self._do(_call("profile_graph", {"profile_id": profile_id})))

    def get_consents(self, profile_id: str) -> models.Consents:
        return cast(models.Consents, self._do(_call("get_consents", {"profile_id": profile_id})))

    def put_consents(self, profile_id: str, consents: dict[str, bool]) -> models.Consents:
        return cast(models.Consents, self._do(_call("put_consents", {"profile_id": profile_id},
                                                    json={"consents": consents})))

    def erase_profile(self, profile_id: str) -> models.Erasure:
        return cast(models.Erasure, self._do(_call("erase_profile", {"profile_id": profile_id})))

    def event_status(self, event_id: str) -> models.EventStatus:
        return cast(models.EventStatus, self._do(_call("event_status", {"event_id": event_id})))

    def list_sources(self) -> models.SourceList:
        return cast(models.SourceList, self._do(_call("list_sources")))

    def create_source(self, source: models.SourceCreate) -> models.SourceWithKey:
        return cast(models.SourceWithKey, self._do(_call("create_source", json=source)))

    def stats(self) -> models.Stats:
        return cast(models.Stats, self._do(_call("stats")))


class AsyncStratumClient:
    """The asynchronous twin of ``StratumClient``: same arguments, same methods, awaited."""

    def __init__(self, read_url: str | None = None, api_key: str | None = None, *, ingest_url: str | None = None,
                 write_key: str | None = None, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._read = httpx.AsyncClient(base_url=read_url or "", timeout=timeout_s, transport=transport,
                                       headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._ingest = httpx.AsyncClient(base_url=ingest_url or "", timeout=timeout_s, transport=transport,
                                         headers={"Authorization": f"Bearer {write_key}"} if write_key else {})

    async def __aenter__(self) -> AsyncStratumClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._read.aclose()
        await self._ingest.aclose()

    async def _do(self, call: _Call) -> Any:
        client = self._ingest if call.ingest else self._read
        return _result(await client.request(call.method, call.path, params=call.params, json=call.json))

    async def send_events(self, events: list[NativeEvent]) -> IngestResult:
        return cast(IngestResult, await self._do(_Calls.send_events(events)))

    async def get_profile(self, profile_id: str) -> models.Profile:
        return cast(models.Profile, await self._do(_Calls.get_profile(profile_id)))

    async def find_profile(self, identifier_type: str | None = None, identifier_value: str | None = None, *,
                           identifier_hash: str | None = None) -> models.Profile:
        return cast(models.Profile,
                    await self._do(_Calls.find_profile(identifier_type, identifier_value, identifier_hash)))

    async def profile_events(self, profile_id: str, *, limit: int | None = None, cursor: str | None = None
                             ) -> models.EventPage:
        return cast(models.EventPage, await self._do(_Calls.profile_events(profile_id, limit, cursor)))

    async def profile_graph(self, profile_id: str) -> models.Graph:
        return cast(models.Graph, await self._do(_call("profile_graph", {"profile_id": profile_id})))

    async def get_consents(self, profile_id: str) -> models.Consents:
        return cast(models.Consents, await self._do(_call("get_consents", {"profile_id": profile_id})))

    async def put_consents(self, profile_id: str, consents: dict[str, bool]) -> models.Consents:
        return cast(models.Consents, await self._do(_call("put_consents", {"profile_id": profile_id},
                                                          json={"consents": consents})))

    async def erase_profile(self, profile_id: str) -> models.Erasure:
        return cast(models.Erasure, await self._do(_call("erase_profile", {"profile_id": profile_id})))

    async def event_status(self, event_id: str) -> models.EventStatus:
        return cast(models.EventStatus, await self._do(_call("event_status", {"event_id": event_id})))

    async def list_sources(self) -> models.SourceList:
        return cast(models.SourceList, await self._do(_call("list_sources")))

    async def create_source(self, source: models.SourceCreate) -> models.SourceWithKey:
        return cast(models.SourceWithKey, await self._do(_call("create_source", json=source)))

    async def stats(self) -> models.Stats:
        return cast(models.Stats, await self._do(_call("stats")))
