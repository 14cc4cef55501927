"""Wire schemas of destinations and their deliveries (CONTRACT 7)."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType


class Destination(Struct):
    id: str
    name: str
    type: str
    url: str
    topics: list[str]
    event_names: list[str] | None
    consent: str | None
    active: bool
    created_at: str
    batch_size: int


class DestinationWithSecret(Destination):
    """A DESTINATION with its signing secret: shown once, at creation and rotation."""

    secret: str


class DestinationList(Struct):
    destinations: list[Destination]


class DestinationCreate(Struct, forbid_unknown_fields=True):
    name: str
    url: str
    topics: list[str]
    type: str = "webhook"
    event_names: list[str] | None = None
    consent: str | None = None
    active: bool = True
    batch_size: int = 1


class DestinationPatch(Struct, forbid_unknown_fields=True):
    """Only the fields present change; ``null`` clears ``event_names`` / ``consent``."""

    name: str | UnsetType = UNSET
    url: str | UnsetType = UNSET
    topics: list[str] | UnsetType = UNSET
    event_names: list[str] | None | UnsetType = UNSET
    consent: str | None | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    batch_size: int | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


class Delivery(Struct):
    id: str
    message_id: str
    topic: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    skip_reason: str | None


class DeliveryPage(Struct):
    deliveries: list[Delivery]
    next_cursor: str | None


class DeliveryRetry(Struct, forbid_unknown_fields=True):
    """Either every delivery in ``status`` (``dead`` or ``failed``) or the ones listed in ``ids``."""

    status: str | None = None
    ids: list[str] | None = None


class Requeued(Struct):
    requeued: int


class ReplayRequest(Struct, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    to: str = msgspec.field(default="")


class ReplayQueued(Struct):
    queued: int
