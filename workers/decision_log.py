"""The identity decision log (CONTRACT 9): every link, merge and refusal, per profile.

Written by the worker in the batch's transaction (``record_decisions``), read by the read
API's ``/profiles/{id}/decisions`` and ``/identity/explain``. Rows only come from what the
plan did or refused, so a batch of returning visitors (no new identifier, no refusal)
writes nothing; otherwise the cost is one ``INSERT ... SELECT`` per batch, whatever the
number of rows. A retried batch never gets here twice: its dedupe keys are already taken.

Each row belongs to the profile it shaped: a link to the profile that gained the
identifier, a merge to the survivor (the absorbed profile's own earlier decisions keep its
id and are read through ``profiles.merged_into``), a refusal to the event's profile (null
when the event had none), and a move (a provisional identifier taken by a trusted claim, or
displaced at a type limit) also to the profile the identifier left.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from core.identifiers import Identifier
from core.identity_plan import Plan
from workers.copy_rows import NULL, copy_lines, copy_text, json_text

# Per-event decision kinds (core.identity_plan.Decision, workers.prepare, suppression) as
# logged: (kind, rule). ``None`` in the rule: ``limit:{type}`` of the identifier.
_REFUSALS: dict[str, tuple[str, str | None]] = {
    "limit": ("limit", None),
    "merge_limit": ("limit", "max_merges"),
    "untrusted_merge": ("untrusted_merge", "trust"),
    "unverified_claim": ("unverified_claim", "identity_verification"),
    "blocked_identifier": ("blocked", "blocked_values"),
    "suppressed": ("suppressed", "erasure"),
    "unmerge_block": ("unmerge", "unmerge_block"),
}
MERGE_RULE = "survivor: highest-priority identifier, then earliest first_seen"


def _ids(*idents: Identifier | None) -> list[dict[str, str]]:
    return [{"type": i.type, "hash": i.hash} for i in idents if i is not None]


def decision_rows(plan: Plan, event_ids: Sequence[str], event_profiles: Sequence[str | None],
                  link_types: Sequence[str], decisions: Sequence[Sequence[dict]]) -> list[dict]:
    """The log rows of one planned batch (pure). ``decisions``: each event's decision dicts
    (the plan's refusals already appended)."""
    rows: list[dict] = []
    for lk in plan.links:
        rows.append({"p": lk.profile_id, "e": event_ids[lk.event_index], "k": "link",
                     "i": _ids(lk.via, lk.identifier), "r": link_types[lk.event_index],
                     "m": f"{lk.identifier.type} linked" + (f" beside {lk.via.type}" if lk.via else " (first sight)")})
    for m in plan.merges:
        rows.append({"p": m.survivor, "e": event_ids[m.event_index], "k": "merge", "i": _ids(m.trigger, m.via),
                     "r": MERGE_RULE, "m": f"profile {m.absorbed} merged into {m.survivor} on {m.trigger.type}"})
    for mv in plan.moves:
        # The event's profile gets the refusal-kind decision below; the profile the
        # identifier leaves gets this one.
        kind, rule = ("limit", f"limit:{mv.identifier.type}") if mv.provisional else \
            ("unverified_claim", "identity_verification")
        rows.append({"p": mv.from_profile, "e": event_ids[mv.event_index], "k": kind, "i": _ids(mv.identifier),
                     "r": rule, "m": f"{mv.identifier.type} moved to profile {mv.to_profile}"})
    for index, event_decisions in enumerate(decisions):
        for d in event_decisions:
            known = _REFUSALS.get(str(d.get("kind")))
            if known is None:
                continue
            kind, refusal_rule = known
            id_type = str(d.get("type", ""))
            rows.append({"p": event_profiles[index], "e": event_ids[index], "k": kind,
                         "i": [{"type": id_type, "hash": d.get("hash")}], "r": refusal_rule or f"limit:{id_type}",
                         "m": str(d.get("message", ""))})
    return rows


def record_decisions(conn: psycopg.Connection, tenant_id: str, rows: list[dict]) -> None:
    """Insert the rows inside the caller's transaction (ids keep their order)."""
    if not rows:
        return
    copy_lines(conn, "identity_decisions", "tenant_id, profile_id, event_id, kind, identifiers, rule, message",
               [f"{tenant_id}\t{r['p'] or NULL}\t{r['e']}\t{r['k']}\t{json_text(r['i'])}\t{copy_text(r['r'])}"
                f"\t{copy_text(r['m'])}" for r in rows])
