"""What the Segment screen at the door returns, and what it may remember within one request.
Pure.

``core.segment.screen_segment_event`` runs once per event of every Segment/RudderStack
request, so its result is a named tuple (cheaper to build than a dataclass) and a batch
shares one ``ScreenMemo``: the events of one SDK batch repeat their ``sentAt``, often their
timestamps, and their ``userId``/``anonymousId``, and each of those is judged once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple


class ScreenedEvent(NamedTuple):
    """A usable event: its dedupe key (``messageId``, or None: the event id is the key), its
    skew-corrected time and its type."""

    dedupe_key: str | None
    event_time: datetime
    event_type: str


@dataclass
class ScreenMemo:
    """Verdicts remembered within one request.

    A memo is valid only for calls that share every argument but the event itself (the
    batch's ``sentAt``, the receipt time, the time limits, the source's blocked values):
    make one per request and never keep it longer.
    """

    # (originalTimestamp, timestamp, sentAt) -> corrected event time, or the rejection
    # (code, message) of an unreadable or out-of-window time
    times: dict[tuple[str | None, str | None, str | None], datetime | tuple[str, str]] = field(default_factory=dict)
    # id text -> usable as an identifier (length, no NUL, not blocked)
    ids: dict[str, bool] = field(default_factory=dict)
