"""Hostile clients against real server processes (``stratum ingest-api`` / ``read-api``
under granian): connections that trickle their headers, bodies that never finish, broken
chunked framing. Every test opens a bounded number of loopback connections and closes them
itself; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
from collections.abc import Iterator

import pytest
from test_http_support import RunningServer, body_of, raw_request, run_server, status_of

SLOW_CLIENTS = 1_100  # what stopped the ingest API from answering anyone
ANSWER_WITHIN_S = 20.0  # a generous bound; before the fix the answer took granian's 30 s header timeout


@pytest.fixture(scope="module", autouse=True)
def enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_CLIENTS + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))


@contextlib.contextmanager
def trickling_clients(server: RunningServer, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections that sent a request line and one header, and then nothing."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection((server.host, server.port), timeout=10)
            s.sendall(b"POST /api/v1/cdp/events HTTP/1.1\r\nHost: stratum\r\n")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _native_post(write_key: str, body: bytes, *, extra: str = "") -> bytes:
    return (f"POST /api/v1/cdp/events HTTP/1.1\r\nHost: stratum\r\nAuthorization: Bearer {write_key}\r\n"
            f"Content-Type: application/json\r\n{extra}").encode() + b"\r\n" + body


def _events_body() -> bytes:
    return json.dumps({"events": [{"event_name": "Ping", "event_time": "2026-01-01T00:00:00Z",
                                   "identifiers": [{"type": "anonymous_id", "value": "hostile-a"}]}]}).encode()


def _assert_error_body(response: bytes, status: int, code: str) -> None:
    assert status_of(response) == status, response[:400]
    body = json.loads(body_of(response))
    assert body["code"] == code and body["message"] and body["status"] == status


def test_a_thousand_trickling_clients_do_not_lock_others_out(settings, tenant, redis_conn):
    # Headers may take up to a minute here: only the connection cap keeps the server open to others.
    with run_server("ingest-api", settings, http_header_timeout_s="60") as server, \
            trickling_clients(server, SLOW_CLIENTS) as slow:
        body = _events_body()
        answer = raw_request(server, _native_post(tenant.write_key, body, extra=f"Content-Length: {len(body)}\r\n"
                                                  "Connection: close\r\n"), timeout_s=ANSWER_WITHIN_S)
        assert status_of(answer) == 202, answer[:400]
        assert len(slow) == SLOW_CLIENTS


def test_past_the_connection_cap_the_header_timeout_frees_slots(settings, redis_conn):
    with run_server("ingest-api", settings, http_max_connections="50", http_header_timeout_s="1") as server, \
            trickling_clients(server, 200) as slow:
        answer = raw_request(server, b"GET /health HTTP/1.1\r\nHost: stratum\r\nConnection: close\r\n\r\n",
                             timeout_s=ANSWER_WITHIN_S)
        assert status_of(answer) == 200, answer[:400]
        # The trickling connections were closed by the server, not left to hold their slots.
        s = slow[0]
        s.settimeout(ANSWER_WITHIN_S)
        with contextlib.suppress(ConnectionResetError):
            while s.recv(4096):
                pass


@pytest.fixture(scope="module")
def servers(settings):
    """One ingest and one read server with a one-second body timeout."""
    with run_server("ingest-api", settings, http_body_timeout_s="1") as ingest, \
            run_server("read-api", settings, http_body_timeout_s="1") as read:
        yield {"ingest": ingest, "read": read}


MALFORMED_CHUNKED = {
    "bad chunk size": b"zz\r\n{}\r\n0\r\n\r\n",
    "missing CRLF after a chunk": b"2\r\n{}XX0\r\n\r\n",
    "chunk size beyond 64 bits": b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
}


def _chunked_request(kind: str, key: str) -> bytes:
    path = "/api/v1/cdp/events" if kind == "ingest" else "/api/v1/cdp/sources"
    return (f"POST {path} HTTP/1.1\r\nHost: stratum\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()


@pytest.mark.parametrize("kind", ["ingest", "read"])
@pytest.mark.parametrize("case", sorted(MALFORMED_CHUNKED))
def test_malformed_chunked_framing_is_400_with_the_error_body(servers, tenant, kind, case):
    key = tenant.write_key if kind == "ingest" else tenant.api_key
    answer = raw_request(servers[kind], _chunked_request(kind, key) + MALFORMED_CHUNKED[case])
    _assert_error_body(answer, 400, "invalid_body")


@pytest.mark.parametrize("kind", ["ingest", "read"])
def test_a_body_closed_midway_is_400(servers, tenant, kind):
    key = tenant.write_key if kind == "ingest" else tenant.api_key
    with socket.create_connection((servers[kind].host, servers[kind].port), timeout=10) as s:
        s.sendall(_chunked_request(kind, key) + b"5\r\n{\"a\"")
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    _assert_error_body(answer, 400, "invalid_body")


@pytest.mark.parametrize("kind", ["ingest", "read"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_never_finishes_is_408(servers, tenant, kind, framing):
    key = tenant.write_key if kind == "ingest" else tenant.api_key
    if framing == "chunked":
        request = _chunked_request(kind, key) + b"10\r\n{}"  # 16 bytes announced, 2 sent
    else:
        path = "/api/v1/cdp/events" if kind == "ingest" else "/api/v1/cdp/sources"
        request = (f"POST {path} HTTP/1.1\r\nHost: stratum\r\nAuthorization: Bearer {key}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"events\": [").encode()
    answer = raw_request(servers[kind], request, timeout_s=ANSWER_WITHIN_S)
    _assert_error_body(answer, 408, "body_timeout")


def test_servers_still_answer_after_the_abuse(servers, tenant):
    body = _events_body()
    answer = raw_request(servers["ingest"], _native_post(tenant.write_key, body, extra=f"Content-Length: {len(body)}\r\n"
                                                         "Connection: close\r\n"))
    assert status_of(answer) == 202, answer[:400]
