"""stratum_client: its models are the read API's OpenAPI document regenerated (drift
fails here), its endpoint table matches the document, and the sync and async clients
drive the real apps end to end."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime

import httpx
import pytest

from stratum_client import ENDPOINTS, AsyncStratumClient, StratumAPIError, StratumClient
from stratum_client._codegen import read_api_openapi, render_models


@pytest.fixture(scope="module")
def openapi() -> dict:
    return read_api_openapi()


def test_models_are_current(openapi):
    from pathlib import Path

    import stratum_client

    models = Path(stratum_client.__file__).with_name("models.py")
    assert models.read_text() == render_models(openapi), (
        "stratum_client/models.py is stale: run python -m stratum_client._codegen > stratum_client/models.py")


def test_endpoint_table_matches_the_openapi_document(openapi):
    for name, (method, path, model) in ENDPOINTS.items():
        op = openapi["paths"].get(path, {}).get(method.lower())
        assert op is not None, f"{name}: {method} {path} is not in the read API"
        ok = next(r for code, r in op["responses"].items() if code.startswith("2"))
        assert ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1] == model, name
        hints = inspect.get_annotations(getattr(StratumClient, name), eval_str=True)
        assert hints["return"].__name__ == model, name


def test_sync_and_async_clients_offer_the_same_operations():
    def public(cls) -> dict[str, list[str]]:
        return {n: list(inspect.signature(f).parameters) for n, f in vars(cls).items()
                if not n.startswith("_") and callable(f) and n not in {"close", "aclose"}}

    assert public(StratumClient) == public(AsyncStratumClient)
    assert set(ENDPOINTS) | {"send_events"} == set(public(StratumClient))


class _ToTestClients(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Routes http://ingest/... and http://read/... to the apps' in-process test clients."""

    def __init__(self, ingest_client, read_client) -> None:
        self._by_host = {"ingest": ingest_client, "read": read_client}

    def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        r = self._by_host[request.url.host].request(request.method, request.url.raw_path.decode(),
                                                    headers=dict(request.headers), content=body)
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._send(request, request.read())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return self._send(request, await request.aread())


def _event(external_id: str) -> dict:
    return {"event_name": "Signed Up", "event_time": datetime.now(UTC).isoformat(),
            "identifiers": [{"type": "external_id", "value": external_id}, {"type": "email", "value": "c@example.com"}]}


def test_sync_client_end_to_end(ingest_client, read_client, tenant, drain):
    transport = _ToTestClients(ingest_client, read_client)
    with StratumClient("http://read", tenant.api_key, ingest_url="http://ingest", write_key=tenant.write_key,
                       transport=transport) as client:
        sent = client.send_events([_event("client-1")])
        assert sent["accepted"] == 1
        assert drain() == 0
        profile = client.find_profile("email", "C@example.com")
        assert client.get_profile(profile["id"])["id"] == profile["id"]
        assert client.event_status(sent["results"][0]["event_id"])["status"] == "processed"
        page = client.profile_events(profile["id"], limit=1)
        assert [e["event_id"] for e in page["events"]] == [sent["results"][0]["event_id"]]
        assert client.profile_graph(profile["id"])["nodes"]
        assert {s["id"] for s in client.list_sources()["sources"]} == {tenant.source_id}
        with pytest.raises(StratumAPIError) as exc:
            client.find_profile("email", "nobody@example.com")
        assert exc.value.status == 404 and exc.value.code


def test_async_client_end_to_end(ingest_client, read_client, tenant, drain):
    transport = _ToTestClients(ingest_client, read_client)

    async def run() -> None:
        async with AsyncStratumClient("http://read", tenant.api_key, ingest_url="http://ingest",
                                      write_key=tenant.write_key, transport=transport) as client:
            sent = await client.send_events([_event("client-2")])
            assert sent["accepted"] == 1
            assert drain() == 0
            profile = await client.find_profile("external_id", "client-2")
            consents = await client.put_consents(profile["id"], {"email": True})
            assert consents["consents"]["email"]["granted"] is True
            assert (await client.get_consents(profile["id"]))["consents"]["email"]["granted"] is True
            assert (await client.stats()) is not None
            erased = await client.erase_profile(profile["id"])
            assert erased["erased"]
            with pytest.raises(StratumAPIError) as exc:
                await client.get_profile(profile["id"])
            assert exc.value.status == 404

    asyncio.run(run())
