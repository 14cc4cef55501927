"""Load generation: wrk for saturation (a compiled client, so the generator is not the
bottleneck), and a constant-rate asyncio client for latency at a fixed load (latency is
measured from each request's *scheduled* send time, so queueing delay is not hidden)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

SEGMENT_EVENT = (
    '{"type":"track","messageId":"%s-%d","anonymousId":"anon-%d","userId":%s,"event":"Product Viewed",'
    '"properties":{"product_id":"sku-%d","price":19.99,"currency":"USD"},"context":{"library":'
    '{"name":"analytics-python","version":"2.3.3"},"ip":"203.0.113.9","userAgent":"Mozilla/5.0 (X11)"},'
    '"integrations":{},'
    '"timestamp":"2026-11-28T10:00:00.000+00:00"}'
)


def segment_batch(prefix: str, n: int = 100) -> bytes:
    """An analytics-python batch of ``n`` track calls, about 37 KB for 100 (the size the
    ingest issue specifies)."""
    items = [SEGMENT_EVENT % (prefix, i, i % 50, f'"user-{i % 20}"' if i % 5 == 0 else "null", i) for i in range(n)]
    return ('{"batch":[' + ",".join(items) + '],"sentAt":"2026-11-28T10:00:00.100+00:00"}').encode()


_WRK_LUA = r"""
local counter = 0
local parts = {}
local template = [[%s]]
local chunks = {}
for piece in string.gmatch(template .. "@@ID@@", "(.-)@@ID@@") do table.insert(chunks, piece) end
function request()
  counter = counter + 1
  local tag = string.format("%%d-%%d", math.random(1, 1000000000), counter)
  local out = {}
  for i = 1, #chunks - 1 do
    out[#out + 1] = chunks[i]
    out[#out + 1] = tag
  end
  out[#out + 1] = chunks[#chunks]
  return wrk.format("POST", "%s", {["Content-Type"] = "application/json", ["Authorization"] = "%s"},
                    table.concat(out))
end
"""


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    non_2xx: int


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, path: str, auth: str, body_template: str, seconds: int, connections: int,
            threads: int = 1) -> WrkResult:
    """Saturate ``url + path`` with POSTs of ``body_template`` (``@@ID@@`` replaced per request)."""
    script = _WRK_LUA % (body_template.replace("]]", "] ]"), path, auth)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = f.name
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                              "--latency", "-s", lua, url], capture_output=True, text=True, timeout=seconds + 30)
    finally:
        os.unlink(lua)
    return _parse_wrk(out.stdout)


def _parse_wrk(text: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def pct(p: str) -> float | None:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(rps, pct("50"), pct("99"), errors, int(non2xx.group(1)) if non2xx else 0)


@dataclass
class RateResult:
    target_rps: float
    achieved_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    statuses: dict[int, int]
    generator_lag_ms: float  # how late the generator itself was sending (should be ~0)


async def _one_connection(host: str, port: int, requests: list[tuple[float, bytes]], latencies: list[float],
                          statuses: dict[int, int], lags: list[float]) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    for due, payload in requests:
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        lags.append(max(0.0, time.perf_counter() - due))
        writer.write(payload)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
        except (asyncio.IncompleteReadError, ConnectionError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            continue
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()
    return errors


def run_constant_rate(host: str, port: int, path: str, auth: str, make_body, rps: float, seconds: float,
                      connections: int = 32) -> RateResult:
    """Open-loop-ish load at ``rps`` for ``seconds``; ``make_body(i)`` gives request i's body."""

    def request(i: int) -> bytes:
        body = make_body(i)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return head + body

    return _drive(host, port, request, rps, seconds, connections)


def run_constant_rate_get(host: str, port: int, paths: list[str], auth: str, rps: float, seconds: float,
                          connections: int = 16) -> RateResult:
    """GETs rotating over ``paths`` at ``rps`` for ``seconds`` (latency as for POSTs)."""

    def request(i: int) -> bytes:
        return (f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: {auth}\r\n\r\n").encode()

    return _drive(host, port, request, rps, seconds, connections)


def _drive(host: str, port: int, request, rps: float, seconds: float, connections: int) -> RateResult:
    total = int(rps * seconds)
    start = time.perf_counter() + 0.5
    per_conn: list[list[tuple[float, bytes]]] = [[] for _ in range(connections)]
    for i in range(total):
        per_conn[i % connections].append((start + i / rps, request(i)))
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> int:
        results = await asyncio.gather(*(_one_connection(host, port, reqs, latencies, statuses, lags)
                                         for reqs in per_conn))
        return sum(results)

    t0 = time.perf_counter()
    errors = asyncio.run(main())
    elapsed = time.perf_counter() - t0 - 0.5
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    lags.sort()
    return RateResult(rps, len(latencies) / elapsed if elapsed > 0 else 0.0, q(0.50), q(0.95), q(0.99), errors,
                      statuses, lags[int(0.99 * len(lags))] * 1000 if lags else 0.0)


_WRK_GET_LUA = r"""
local paths = {%s}
local i = 0
function request()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], {["Authorization"] = "%s"})
end
"""


def run_wrk_get(url: str, paths: list[str], auth: str, seconds: int, connections: int) -> WrkResult:
    """Saturate GETs rotating over ``paths``."""
    script = _WRK_GET_LUA % (",".join(f'"{p}"' for p in paths), auth)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = f.name
    try:
        out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", lua,
                              url], capture_output=True, text=True, timeout=seconds + 30)
    finally:
        os.unlink(lua)
    return _parse_wrk(out.stdout)
