"""Micro-benchmark of PII scrubbing on the worker's per-event path (core.privacy).

``python -m bench.scrub``: microseconds per event for ``scrub_queued_event`` on a typical
clean event (analytics.js-like context, 15 product properties) and on an identify carrying
email and phone in identifiers, traits, context.traits, free text and a URL. CPU time, best
of 7 rounds, so other load on the machine inflates it less.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from core.privacy import scrub_queued_event
from core.schemas import QueuedEvent

CONTEXT = {
    "library": {"name": "analytics.js", "version": "4.1.0"}, "ip": "203.0.113.7",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36",
    "page": {"path": "/pricing", "referrer": "https://www.google.com/", "search": "?utm_source=news&utm_medium=email",
             "title": "Pricing - Example", "url": "https://www.example.com/pricing?utm_source=news&utm_medium=email"},
    "campaign": {"name": "spring", "source": "news", "medium": "email"}, "locale": "en-US",
    "timezone": "Europe/Oslo", "traits": {"plan": "pro"},
}
PROPERTIES = {
    "product_id": "p-123", "sku": "SKU-1", "category": "Shoes", "name": "Runner", "brand": "Acme", "variant": "red",
    "price": 79.99, "quantity": 1, "coupon": None, "currency": "USD", "position": 3, "value": 79.99,
    "url": "https://www.example.com/p/runner", "image_url": "https://cdn.example.com/i/runner.png", "tags": ["a", "b"],
}


def events() -> dict[str, QueuedEvent]:
    now = datetime.now(UTC)
    clean = QueuedEvent("e1", "k1", "track", "Product Viewed", now, [("anonymous_id", "a-1"), ("external_id", "u-1")],
                        PROPERTIES, CONTEXT, {}, None, 80, [])
    pii = QueuedEvent(
        "e2", "k2", "identify", "Identify", now,
        [("email", "jane@example.com"), ("phone", "+12125550110"), ("external_id", "u-1")],
        {**PROPERTIES, "note": "mail jane@example.com", "url": "https://x.example/?email=jane%40example.com"},
        {**CONTEXT, "traits": {"email": "jane@example.com", "phone": "+12125550110"}},
        {"email": "jane@example.com", "phone": "+12125550110", "name": "Jane", "address": {"city": "Oslo"}},
        None, 80, [])
    return {"clean track": clean, "identify with PII": pii}


def per_event_us(event: QueuedEvent, n: int = 20_000, rounds: int = 7) -> float:
    scrub_queued_event(event, "US")  # learn the keys, fill the memos
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            scrub_queued_event(event, "US")
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def main() -> None:
    for name, event in events().items():
        print(f"{name}: {per_event_us(event):.1f} us/event")


if __name__ == "__main__":
    main()
