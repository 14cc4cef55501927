"""Explain's path search and the decision log's rows. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

from core.identifiers import Identifier
from core.identity_plan import Decision, Link, Merge, Move, Plan
from read_api.identity import shortest_path
from workers.decision_log import decision_rows

T = datetime(2026, 11, 30, tzinfo=UTC)


def link(a: str, b: str, kind: str = "co_occurrence", event: str = "e") -> tuple:
    return ("t", a, "t", b, kind, event, T)


def test_shortest_path_is_undirected_shortest_and_reads_from_a_to_b():
    links = [link("a", "b", event="e1"), link("c", "b", event="e2"), link("c", "d", "merge", "e3"),
             link("a", "d", event="e4")]
    nodes = {"t:a", "t:b", "t:c", "t:d"}
    path = shortest_path(links, nodes, "t:a", "t:c")
    assert [(s.from_, s.to, s.event_id) for s in path] == [("t:a", "t:b", "e1"), ("t:b", "t:c", "e2")]
    assert shortest_path(links, nodes, "t:a", "t:a") == []
    assert shortest_path(links, nodes, "t:a", "t:zz") is None


def test_shortest_path_skips_identifiers_no_longer_on_the_profile():
    links = [link("a", "moved"), link("moved", "c"), link("a", "x"), link("x", "y"), link("y", "c")]
    path = shortest_path(links, {"t:a", "t:c", "t:x", "t:y"}, "t:a", "t:c")
    assert [s.to for s in path] == ["t:x", "t:y", "t:c"]


def test_decision_rows_cover_links_merges_and_refusals():
    a, b = Identifier("email", "v", "ha"), Identifier("anonymous_id", "v", "hb")
    plan = Plan(links=[Link(b, "p1", 0, a)], merges=[Merge("p1", "p2", a, 1, b)],
                decisions=[Decision(1, "limit", b, "full")])
    per_event = [[{"kind": "warning", "message": "w"}],
                 [{"kind": "blocked_identifier", "type": "email", "message": "blocked"}, Decision(1, "limit", b, "full").as_dict(),
                  {"kind": "merge_limit", "type": "email", "hash": "ha", "message": "100 merges"}]]
    rows = decision_rows(plan, ["e0", "e1"], ["p1", None], ["identify", "co_occurrence"], per_event)
    assert [(r["k"], r["p"], r["e"], r["r"]) for r in rows] == [
        ("link", "p1", "e0", "identify"), ("merge", "p1", "e1", rows[1]["r"]), ("blocked", None, "e1", "blocked_values"),
        ("limit", None, "e1", "limit:anonymous_id"), ("limit", None, "e1", "max_merges")]
    assert rows[0]["i"] == [{"type": "email", "hash": "ha"}, {"type": "anonymous_id", "hash": "hb"}]
    assert rows[2]["i"] == [{"type": "email", "hash": None}]


def test_moves_are_logged_on_the_profile_left():
    ident = Identifier("email", "v", "he")
    plan = Plan(moves=[Move(ident, "old", "new", 0, None, provisional=False),
                       Move(ident, "new", "own", 0, None, provisional=True)])
    rows = decision_rows(plan, ["e0"], ["new"], ["co_occurrence"], [[]])
    assert [(r["k"], r["p"], r["r"]) for r in rows] == [("unverified_claim", "old", "identity_verification"),
                                                       ("limit", "new", "limit:email")]
