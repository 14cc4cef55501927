"""The live stream (CONTRACT 7): ``GET /api/v1/cdp/stream?topics=a,b``, a WebSocket that
pushes the tenant's messages (the webhook bodies) as workers commit them.

- Authentication: ``Authorization: Bearer KEY`` on the upgrade request, or, without the
  header, a first message ``{"authorization": "Bearer KEY"}`` within 5 s. A bad key in the
  header is refused before the upgrade (HTTP 401 where the server supports the ASGI
  denial-response extension, else close code 4401 before accepting). After the upgrade the
  server closes with 4401 (missing, bad or late first message; the key revoked, noticed
  within a second), 4403 (operator key), 4400 (unknown topic), 4429 (above the tenant's
  stream cap) or 1008 (a client more than ``MAX_BEHIND`` messages behind).
- Fan-out: each read process holds one Redis pub/sub connection (``StreamHub``) subscribed
  to the channels of the tenants it has clients for; any process serves any client.
- Not consent-gated, no replay of missed messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from redis.asyncio import Redis

from core.webhooks import TOPICS
from read_api.auth import Principal
from read_api.state import ReadState
from stratum.queue.deliveries import stream_channel, stream_clients_key

AUTH_TIMEOUT_S = 5.0
MAX_BEHIND = 1000
KEY_RECHECK_S = 0.5
CLIENT_TTL_S = 30.0
_IDLE_CHANNEL = "stratum:stream:_idle"  # keeps the pub/sub connection subscribed to something


class _Typed(msgspec.Struct):
    type: str


_decode_type = msgspec.json.Decoder(_Typed).decode


class StreamClient:
    def __init__(self, topics: frozenset[str]) -> None:
        self.topics = topics
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_BEHIND)
        self.overflow = asyncio.Event()

    def offer(self, topic: str, body: bytes) -> None:
        if topic not in self.topics:
            return
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:  # too far behind: dropped, never buffered without bound
            self.overflow.set()


class StreamHub:
    """This process's pub/sub subscription and its clients, per tenant."""

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url)
        self.pubsub = self.redis.pubsub()
        self.clients: dict[str, set[StreamClient]] = {}
        self.reader: asyncio.Task | None = None

    async def join(self, tenant_id: str, client: StreamClient) -> None:
        if self.reader is None:
            await self.pubsub.subscribe(_IDLE_CHANNEL)
            self.reader = asyncio.create_task(self._read())
        group = self.clients.setdefault(tenant_id, set())
        if not group:
            await self.pubsub.subscribe(stream_channel(tenant_id))
        group.add(client)

    async def leave(self, tenant_id: str, client: StreamClient) -> None:
        group = self.clients.get(tenant_id, set())
        group.discard(client)
        if not group:
            self.clients.pop(tenant_id, None)
            await self.pubsub.unsubscribe(stream_channel(tenant_id))

    async def _read(self) -> None:
        prefix = len(stream_channel(""))
        while True:
            try:
                message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except Exception:  # noqa: BLE001 - Redis blip: clients see a gap, the stream does not replay
                await asyncio.sleep(1.0)
                continue
            if message is None or message["type"] != "message":
                continue
            tenant_id = message["channel"].decode()[prefix:]
            body = message["data"]
            try:
                topic = _decode_type(body).type
            except msgspec.DecodeError:
                continue
            for client in list(self.clients.get(tenant_id, ())):
                client.offer(topic, body)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self.pubsub.aclose()
        await self.redis.aclose()


def hub_of(st: ReadState, app) -> StreamHub:
    hub = getattr(app.state, "stream_hub", None)
    if hub is None:
        hub = app.state.stream_hub = StreamHub(st.settings.redis_url)
    return hub


async def _deny_before_upgrade(socket: WebSocket) -> None:
    if "websocket.http.response" in socket.scope.get("extensions", {}):
        body = msgspec.json.encode({"code": "invalid_api_key", "message": "unknown or revoked API key",
                                    "status": 401})
        await socket.send({"type": "websocket.http.response.start", "status": 401,
                           "headers": [(b"content-type", b"application/json")]})
        await socket.send({"type": "websocket.http.response.body", "body": body})
    else:
        await socket.close(code=4401, reason="unknown or revoked API key")


async def _first_message_key(socket: WebSocket) -> str | None:
    try:
        message = await asyncio.wait_for(socket.receive_json(), AUTH_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect, ValueError, msgspec.DecodeError):
        return None
    value = message.get("authorization") if isinstance(message, dict) else None
    scheme, _, key = str(value or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


async def _authenticate(socket: WebSocket, st: ReadState) -> tuple[Principal, str] | None:
    """The principal and key, or None after closing the socket as CONTRACT 7 says."""
    header = socket.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        principal = await st.keys.lookup(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if principal is None:
            await _deny_before_upgrade(socket)
            return None
        await socket.accept()
    else:
        await socket.accept()
        key = await _first_message_key(socket)
        principal = await st.keys.lookup(key) if key else None
        if principal is None:
            await socket.close(code=4401, reason="send {\"authorization\": \"Bearer KEY\"} within 5 s")
            return None
    if principal.tenant_id is None:
        await socket.close(code=4403, reason="the stream needs a tenant key")
        return None
    return principal, key.strip()


async def _register(st: ReadState, tenant_id: str, client_id: str) -> bool:
    """Count the client in the tenant's cap (shared by every read process); False when full."""
    key, now = stream_clients_key(tenant_id), time.time()
    async with st.redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {client_id: now + CLIENT_TTL_S})
        pipe.zcard(key)
        pipe.expire(key, int(CLIENT_TTL_S) + 1)
        _, _, count, _ = await pipe.execute()
    if count > st.settings.stream_max_clients_per_tenant:
        await st.redis.zrem(key, client_id)
        return False
    return True


async def _pump(socket: WebSocket, st: ReadState, client: StreamClient, tenant_id: str, key: str,
                client_id: str) -> None:
    """Send queued messages until the client leaves, falls behind or its key is revoked."""
    closed = asyncio.create_task(_wait_disconnect(socket))
    last_check = time.monotonic()
    try:
        while not closed.done():
            if client.overflow.is_set():
                await socket.close(code=1008, reason=f"more than {MAX_BEHIND} messages behind")
                return
            if time.monotonic() - last_check >= KEY_RECHECK_S:
                last_check = time.monotonic()
                if await st.keys.lookup(key) is None:
                    await socket.close(code=4401, reason="the API key was revoked")
                    return
                await st.redis.zadd(stream_clients_key(tenant_id), {client_id: time.time() + CLIENT_TTL_S})
            try:
                body = await asyncio.wait_for(client.queue.get(), KEY_RECHECK_S)
            except TimeoutError:
                continue
            await socket.send_text(body.decode())
    finally:
        closed.cancel()


async def _wait_disconnect(socket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, Exception):
        while True:
            await socket.receive_data(mode="text")


@websocket("/api/v1/cdp/stream")
async def live_stream(socket: WebSocket) -> None:
    """CONTRACT 7's live stream; see the module docstring for the close codes."""
    st: ReadState = socket.app.state.read
    auth = await _authenticate(socket, st)
    if auth is None:
        return
    principal, key = auth
    raw = socket.query_params.get("topics") or ""
    topics = frozenset(t.strip() for t in raw.split(",") if t.strip()) or frozenset(TOPICS)
    if not topics <= set(TOPICS):
        await socket.close(code=4400, reason=f"topics must be among: {', '.join(TOPICS)}")
        return
    tenant_id, client_id = principal.tenant_id, uuid.uuid4().hex
    if not await _register(st, tenant_id, client_id):
        await socket.close(code=4429, reason="too many stream clients for this tenant")
        return
    hub, client = hub_of(st, socket.app), StreamClient(topics)
    await hub.join(tenant_id, client)
    try:
        await _pump(socket, st, client, tenant_id, key, client_id)
    except WebSocketDisconnect:
        pass
    finally:
        await hub.leave(tenant_id, client)
        await st.redis.zrem(stream_clients_key(tenant_id), client_id)


STREAM_ROUTES = [live_stream]
