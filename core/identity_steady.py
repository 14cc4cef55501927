"""The steady state of identity: events whose identifiers all sit on one live profile.

Most events come from people already known: every identifier they carry is stored on one
live profile, none provisional, none suppressed. For those the planner (core/identity.py)
decides nothing: no link, no merge, no move, no refusal; the event simply belongs to that
profile. The worker resolves them without the planner and without per-identifier locks
(workers/identity_store.py, ``load_batch``); this module decides, purely, which events of
a batch qualify. Anything not plainly steady goes to the planner.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from core.identifiers import KNOWN_TYPES, Identifier

Key = tuple[str, str]


def may_be_steady(identifiers: Sequence[Identifier], trusted: bool, verified: Collection[Key], protect: bool) -> bool:
    """Whether the planner leaves an event alone when all its ``identifiers`` sit on one
    profile (none provisional); the other arguments are the event's trust, as in
    ``EventIdentity``. An event without identifiers is planned. Under ``protect`` an
    unverified website event needs a home on that profile (a verified identifier, or an
    anonymous_id/device_id): its unverified known identifiers are then ordinary matches
    (CONTRACT 6); without one they would be left out, which the planner records."""
    if not identifiers:
        return False
    if trusted or not protect:
        return True
    return any(i.type not in KNOWN_TYPES or (i.type, i.hash) in verified for i in identifiers)


def steady_events(events_keys: Sequence[Sequence[Key]], eligible: Sequence[bool], owner: Mapping[Key, str],
                  provisional: Collection[Key], suppressed: Collection[Key]) -> dict[int, str]:
    """Event index -> profile, for the events of a batch that are steady.

    ``events_keys``: each event's (type, hash) identifiers; ``eligible``: ``may_be_steady``
    per event; ``owner``: which live profile holds each stored key; ``provisional`` and
    ``suppressed``: keys that are. An event is steady when it is eligible and every key is
    stored on one and the same profile, not provisional, not suppressed, and when no other
    event of the batch that is not steady touches that profile: the planner may merge or
    link onto it, so every event on it is planned with it, in batch order."""
    candidates: dict[int, str] = {}
    planned_profiles: set[str] = set()
    for index, keys in enumerate(events_keys):
        pid = _sole_owner(keys, owner, provisional, suppressed) if eligible[index] else None
        if pid is not None:
            candidates[index] = pid
            continue
        for key in keys:
            holder = owner.get(key)
            if holder is not None:
                planned_profiles.add(holder)
    return {i: pid for i, pid in candidates.items() if pid not in planned_profiles}


def _sole_owner(keys: Sequence[Key], owner: Mapping[Key, str], provisional: Collection[Key],
                suppressed: Collection[Key]) -> str | None:
    pid = None
    for key in keys:
        holder = owner.get(key)
        if holder is None or (pid is not None and holder != pid) or key in provisional or key in suppressed:
            return None
        pid = holder
    return pid
