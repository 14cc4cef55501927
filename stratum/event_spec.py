"""Generates docs/EVENT_SPEC.md: the JSON Schemas of the native and Segment event formats,
derived from the msgspec types the ingest API decodes with, so the document cannot drift
from the code (tests/test_event_spec.py regenerates it and compares).

    python -m stratum.event_spec > docs/EVENT_SPEC.md

The schemas describe shape and types; rules that need more than a schema (identifier
validity, event time windows, size limits, dedupe keys) are stated in prose beside them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from core.schemas import NativeEvent
from core.segment import SegmentMessage

# The request envelopes, as documented in CONTRACT 4.1 and 4.2; the ingest API decodes the
# envelope first and each event with the types above, so these only wrap them.


class NativeBatch(Struct, forbid_unknown_fields=True):
    """Body of POST /api/v1/cdp/events."""

    events: Annotated[list[NativeEvent], Meta(min_length=1, max_length=1000)]
    writeKey: str | None = None  # noqa: N815 - wire name
    api_key: str | None = None


class SegmentBatch(Struct):
    """Body of POST /v1/batch, /v1/import and /v1/b."""

    batch: list[SegmentMessage]
    sentAt: str | None = None  # noqa: N815 - wire names
    writeKey: str | None = None  # noqa: N815
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class SegmentSingle(SegmentMessage):
    """Body of POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group and /v1/alias:
    one message, which may carry the write key."""

    writeKey: str | None = None  # noqa: N815 - wire name


_INTRO = """# Event formats

The JSON Schemas below are generated from the msgspec types the ingest API decodes with
(`core/schemas.py`, `core/segment.py`) by `python -m stratum.event_spec > docs/EVENT_SPEC.md`;
`tests/test_event_spec.py` fails when this page and the code disagree. They give the shape
and the types. Rules a schema cannot state are listed with each format and described in
full in docs/API.md; an event that breaks one is rejected on its own (its batch neighbours
are kept).
"""

_NATIVE = """## Native: `POST /api/v1/cdp/events`

Authentication: the source's write key (HTTP Basic username, `Authorization: Bearer`, or
`writeKey` / `api_key` in the body). Rules beyond the schema:

- 1 to 1,000 events and at most 4 MiB (decompressed) per request; `properties` and
  `context` together at most 32 KB per event.
- `event_time` needs a timezone; not more than 24 h in the future, not older than the
  retention window.
- `identifiers[].type` is one of `email`, `phone`, `device_id`, `anonymous_id`,
  `external_id`; a value invalid for its type rejects the event; blocked values (`null`,
  `unknown`, `0`, ...) are dropped with a warning; at least one usable identifier is needed.
  `signature` is the HMAC of `"{type}:{value}"` with the source's identity secret.
- `idempotency_key` (1..255 characters) is the event's dedupe key.
- Text containing `\\u0000` rejects the event.
"""

_SEGMENT = """## Segment and RudderStack: `POST /v1/batch` (and `/v1/import`, `/v1/b`)

Single events go to `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`,
`/v1/alias` with one message (the `SegmentMessage` schema, plus `writeKey` and `sentAt`) as the
body. Rules beyond the schema:

- `type` is one of `track`, `identify`, `page`, `screen`, `group`, `alias` (on the single
  routes, the route gives it).
- Identity: `userId` -> `external_id`, `anonymousId` -> `anonymous_id`, `traits.email` /
  `context.traits.email` -> `email`, `traits.phone` / `context.traits.phone` -> `phone`,
  `context.device.id` -> `device_id`; `null` ids are absent. An event with no usable
  identifier is unusable.
- `messageId` is the dedupe key (at most 255 characters); a missing one is generated.
- `timestamp` is corrected for client clock skew with `sentAt` and `originalTimestamp`.
- An event over 32 KB is rejected alone; a request over 4 MiB is 413.
"""


def _schema_block(title: str, schema: dict) -> str:
    return f"### {title}\n\n```json\n{json.dumps(schema, indent=2, sort_keys=True)}\n```\n"


def render_event_spec() -> str:
    """The whole of docs/EVENT_SPEC.md."""
    (native, segment), components = msgspec.json.schema_components(
        [NativeBatch, SegmentBatch], ref_template="#/$defs/{name}")
    native_defs = {k: v for k, v in components.items() if k in {"NativeBatch", "NativeEvent", "IdentifierIn", "ConsentIn"}}
    segment_defs = {k: v for k, v in components.items() if k in {"SegmentBatch", "SegmentMessage"}}
    parts = [
        _INTRO, _NATIVE,
        _schema_block("Schema", {"$schema": "https://json-schema.org/draft/2020-12/schema", **native,
                                 "$defs": native_defs}),
        _SEGMENT,
        _schema_block("Schema", {"$schema": "https://json-schema.org/draft/2020-12/schema", **segment,
                                 "$defs": segment_defs}),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_event_spec(), end="")
