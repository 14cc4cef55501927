"""Realistic Segment traffic for benchmarks: about 70% anonymous-only events, 20% carrying
an email or phone in varied formats, 10% identify/alias calls, about 2% retried duplicates."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec

_EMAIL_FORMS = ("{u}@example.com", " {U}@Example.COM ", "{u}@EXAMPLE.com")
# One phone number per person (exchange 200-899, line 0000-9999: 7 million persons).
_PHONE_FORMS = ("(650) {x}-{n:04d}", "+1 650 {x} {n:04d}", "650.{x}.{n:04d}", "+1650{x}{n:04d}")


class TrafficGenerator:
    """Deterministic per seed. ``people`` bounds how many distinct persons appear."""

    def __init__(self, seed: int = 7, people: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.people = people
        self.sent: list[dict] = []
        self.counter = 0

    def _person(self) -> int:
        return self.rng.randrange(self.people)

    def message(self, now: datetime) -> dict:
        self.counter += 1
        p = self._person()
        anon = f"anon-{p}-{p % 3}"  # a person uses up to 3 browsers
        roll = self.rng.random()
        ts = (now - timedelta(seconds=self.rng.random() * 30)).isoformat()
        base = {"messageId": f"m-{self.counter}-{self.rng.getrandbits(40):x}", "anonymousId": anon,
                "timestamp": ts, "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0",
                                             "library": {"name": "analytics-python", "version": "2.3.3"}},
                "integrations": {}}
        if roll < 0.70:
            msg = {**base, "type": "track", "userId": None, "event": "Product Viewed",
                   "properties": {"product_id": f"sku-{self.rng.randrange(500)}", "price": 19.99}}
        elif roll < 0.90:
            form = self.rng.random()
            traits = ({"email": self.rng.choice(_EMAIL_FORMS).format(u=f"user{p}", U=f"User{p}")} if form < 0.6
                      else {"phone": self.rng.choice(_PHONE_FORMS).format(x=200 + p // 10_000 % 700, n=p % 10_000)})
            name = "Order Completed" if self.rng.random() < 0.2 else "Checkout Started"
            msg = {**base, "type": "track", "userId": None, "event": name, "properties": {"total": 49.0},
                   "context": {**base["context"], "traits": traits}}
        elif roll < 0.97:
            msg = {**base, "type": "identify", "userId": f"user-{p}",
                   "traits": {"email": f"user{p}@example.com", "plan": self.rng.choice(["free", "pro"])}}
        else:
            msg = {**base, "type": "alias", "userId": f"user-{p}", "previousId": anon}
        if self.sent and self.rng.random() < 0.02:
            msg = self.rng.choice(self.sent[-500:])  # a retried duplicate, same messageId
        else:
            self.sent.append(msg)
            if len(self.sent) > 2000:
                del self.sent[:1000]
        return msg

    def batch(self, n: int = 100, now: datetime | None = None) -> bytes:
        now = now or datetime.now(UTC)
        return msgspec.json.encode({"batch": [self.message(now) for _ in range(n)], "sentAt": now.isoformat()})
