"""An SDK identifier candidate, from the value a client sent to the identifier a worker
stores, in one memoized step. Pure.

A Segment event's identifier goes through three steps on its way to storage: the mapping
normalizes the value as sent (``core.segment.normalize_candidates``: a blocked or invalid
value becomes a warning), scrubbing carries email and phone pre-hashed
(``core.privacy.prehash_identifier``), and the worker normalizes that resting form again
with the tenant's blocked values (``normalize_identifier``: a refusal becomes a decision).
``candidate_outcome`` is exactly that composition, so a worker that uses it stores what
the three steps store; it runs them once per distinct (type, value, region, blocked
values) and remembers the outcome, since the same ids come back event after event.
"""

from __future__ import annotations

from typing import NamedTuple

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import PREHASHED_PREFIX, Identifier, IdentifierType, normalize_identifier
from core.privacy import prehash_identifier


class CandidateOutcome(NamedTuple):
    """What becomes of one identifier candidate. Exactly one of ``warning`` (dropped by the
    mapping) and ``mapped`` is set; a mapped candidate with an empty ``resting`` is dropped
    by scrubbing (it never identifies); otherwise exactly one of ``stored`` and ``decision``
    (refused by the worker's normalization) is set."""

    warning: str | None
    mapped: tuple[str, str] | None  # (type, normalized value), as the mapped event lists it
    resting: str  # the value as the scrubbed event carries it
    stored: Identifier | None
    decision: dict[str, str] | None


_SELF_NORMALIZING = frozenset({IdentifierType.EMAIL, IdentifierType.PHONE})
_MEMOS: dict[tuple[str | None, frozenset[str]], dict[tuple[str, str], CandidateOutcome]] = {}
_MAX_MEMO = 200_000  # outcomes remembered in all, whatever the regions and blocked values
_memo_size = 0


def outcome_memo(phone_region: str | None, extra_blocked: frozenset[str]) -> dict[tuple[str, str], CandidateOutcome]:
    """The remembered outcomes of text candidates under one region and set of blocked values,
    by (type, value): a caller looks a candidate up here first and calls
    ``candidate_outcome`` on a miss (which fills it)."""
    memo = _MEMOS.get((phone_region, extra_blocked))
    if memo is None:
        memo = _MEMOS[(phone_region, extra_blocked)] = {}
    return memo


def candidate_outcome(id_type: str, value: object, phone_region: str | None,
                      extra_blocked: frozenset[str]) -> CandidateOutcome:
    """The outcome of a candidate that is present (not None, not ``""``). Text values are
    remembered in ``outcome_memo``; all memos together hold at most ``_MAX_MEMO`` outcomes
    (all are forgotten when full)."""
    global _memo_size
    if type(value) is not str:
        return _outcome(id_type, value, phone_region, extra_blocked)
    memo = outcome_memo(phone_region, extra_blocked)
    outcome = memo.get((id_type, value))
    if outcome is None:
        if _memo_size >= _MAX_MEMO:
            _MEMOS.clear()
            _memo_size = 0
            memo = outcome_memo(phone_region, extra_blocked)
        outcome = memo[(id_type, value)] = _outcome(id_type, value, phone_region, extra_blocked)
        _memo_size += 1
    return outcome


def _outcome(id_type: str, value: object, phone_region: str | None,
             extra_blocked: frozenset[str]) -> CandidateOutcome:
    """The three steps, with the repeats that provably give what they were given skipped
    (each shortcut says why it is exact)."""
    try:
        norm = normalize_identifier(id_type, value, default_region=phone_region, extra_blocked=extra_blocked)
    except BlockedIdentifier as exc:
        return CandidateOutcome(exc.message, None, "", None, None)
    except InvalidIdentifier as exc:
        return CandidateOutcome(f"{id_type} ignored: {exc.message}", None, "", None, None)
    mapped = (norm.type, norm.value)
    if id_type in _SELF_NORMALIZING and not norm.value.startswith(PREHASHED_PREFIX):
        # A normalized address or E.164 number normalizes to itself (an address is trimmed,
        # lowercased and valid; an E.164 number parses back to the same country code and
        # national number, so it is valid and formats the same: tests/unit/test_identifiers.py
        # checks every region's example numbers), and neither is blocked since the value it
        # came from was not; so its prehashed form is the prefix and the hash just computed.
        resting = PREHASHED_PREFIX + norm.hash
    else:
        resting = prehash_identifier(norm.type, norm.value, phone_region)
    if not resting:
        return CandidateOutcome(None, mapped, "", None, None)
    if resting == value:
        # The same function of the same arguments: normalizing again gives ``norm``.
        return CandidateOutcome(None, mapped, resting, norm, None)
    if not extra_blocked and resting.startswith(PREHASHED_PREFIX) and resting == PREHASHED_PREFIX + norm.hash:
        # A prehashed value whose hex is a SHA-256 hexdigest: read back as that hash, and
        # with no blocked values of the tenant's there is nothing to compare it with.
        return CandidateOutcome(None, mapped, resting, Identifier(norm.type, resting, norm.hash), None)
    try:
        stored = normalize_identifier(norm.type, resting, default_region=phone_region, extra_blocked=extra_blocked)
    except (BlockedIdentifier, InvalidIdentifier) as exc:
        return CandidateOutcome(None, mapped, resting, None,
                                {"kind": exc.code, "type": norm.type, "message": exc.message})
    return CandidateOutcome(None, mapped, resting, stored, None)
