"""Identity graph and consents of a profile, on data from the real pipeline."""

from __future__ import annotations

import pytest
from test_read_support import auth, event, hash_of, ingest_and_drain, profile_by


def ref(id_type: str, value: str) -> str:
    return f"{id_type}:{hash_of(id_type, value)}"


def test_graph_nodes_edges_with_evidence(ingest_client, read_client, tenant, drain):
    (first, second) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                       event("Signed Up", ("email", "g@example.com"), ("anonymous_id", "g-anon")),
                                       event("Viewed", ("anonymous_id", "g-anon"), ("device_id", "g-dev")))
    pid = profile_by(read_client, tenant.api_key, "email", "g@example.com").json()["id"]
    r = read_client.get(f"/api/v1/cdp/profiles/{pid}/graph", headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    graph = r.json()
    assert {f"{n['type']}:{n['hash']}" for n in graph["nodes"]} == {
        ref("email", "g@example.com"), ref("anonymous_id", "g-anon"), ref("device_id", "g-dev")}
    assert all(set(n) == {"type", "hash", "first_seen"} for n in graph["nodes"])
    nodes = {f"{n['type']}:{n['hash']}" for n in graph["nodes"]}
    assert graph["edges"], graph
    for edge in graph["edges"]:
        assert set(edge) == {"from", "to", "link_type", "evidence"}
        assert edge["from"] in nodes and edge["to"] in nodes
        assert edge["evidence"]["event_id"] in (first, second)
    assert any(e["to"] == ref("device_id", "g-dev") and e["evidence"]["event_id"] == second for e in graph["edges"])
    assert graph["merges"] == []


def test_graph_shows_merges_into_the_profile_and_into_its_absorbed_profiles(ingest_client, read_client, tenant,
                                                                            drain):
    """anon -> device (1st merge), then device's profile -> email's profile (2nd merge):
    the final survivor's graph shows both, and so does any merged-away id."""
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("A", ("anonymous_id", "c-anon")), event("B", ("device_id", "c-dev")))
    p_anon = profile_by(read_client, tenant.api_key, "anonymous_id", "c-anon").json()["id"]
    p_dev = profile_by(read_client, tenant.api_key, "device_id", "c-dev").json()["id"]
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("C", ("anonymous_id", "c-anon"), ("device_id", "c-dev")))
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("D", ("email", "c@example.com")))
    p_mail = profile_by(read_client, tenant.api_key, "email", "c@example.com").json()["id"]
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("E", ("device_id", "c-dev"), ("email", "c@example.com")))

    graph = read_client.get(f"/api/v1/cdp/profiles/{p_mail}/graph", headers=auth(tenant.api_key)).json()
    merges = [(m["survivor"], m["absorbed"], m["trigger"]) for m in graph["merges"]]
    assert merges == [(p_dev, p_anon, merges[0][2]), (p_mail, p_dev, merges[1][2])]
    assert merges[0][2] in (ref("anonymous_id", "c-anon"), ref("device_id", "c-dev"))
    assert merges[1][2] in (ref("device_id", "c-dev"), ref("email", "c@example.com"))
    assert all(m["at"] for m in graph["merges"])
    assert len(graph["nodes"]) == 3
    for old in (p_anon, p_dev):
        assert read_client.get(f"/api/v1/cdp/profiles/{old}/graph", headers=auth(tenant.api_key)).json() == graph


def test_consents_put_then_get_with_history(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "k@example.com")))
    pid = profile_by(read_client, tenant.api_key, "email", "k@example.com").json()["id"]
    path = f"/api/v1/cdp/profiles/{pid}/consents"
    assert read_client.get(path, headers=auth(tenant.api_key)).json() == {"consents": {}, "history": []}

    headers = {**auth(tenant.api_key), "User-Agent": "pref-centre/1.0"}
    r = read_client.put(path, json={"consents": {"email": True, "sms": False}}, headers=headers)
    assert r.status_code == 200, r.text
    first = r.json()
    assert {t: c["granted"] for t, c in first["consents"].items()} == {"email": True, "sms": False}
    assert all(c["source_id"] is None and c["updated_at"] for c in first["consents"].values())
    assert len(first["history"]) == 2
    assert all(h["user_agent"] == "pref-centre/1.0" and h["ip"] and h["source_id"] is None and h["event_id"] is None
               for h in first["history"])

    r = read_client.put(path, json={"consents": {"email": False}}, headers=headers)
    state = r.json()
    assert {t: c["granted"] for t, c in state["consents"].items()} == {"email": False, "sms": False}
    assert [(h["consent_type"], h["granted"]) for h in state["history"]][0] == ("email", False)
    assert len(state["history"]) == 3
    assert read_client.get(path, headers=auth(tenant.api_key)).json() == state


def test_consents_show_in_the_cached_profile_at_once(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "kc@example.com")))
    for _ in range(2):
        pid = profile_by(read_client, tenant.api_key, "email", "kc@example.com").json()["id"]
    read_client.put(f"/api/v1/cdp/profiles/{pid}/consents", json={"consents": {"ads": True}},
                    headers=auth(tenant.api_key))
    profile = profile_by(read_client, tenant.api_key, "email", "kc@example.com").json()
    assert profile["consents"]["ads"]["granted"] is True


def test_consents_of_a_merged_away_id_are_the_survivors(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("anonymous_id", "km-anon")),
                     event("B", ("email", "km@example.com")))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "km-anon").json()["id"]
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("C", ("anonymous_id", "km-anon"), ("email", "km@example.com")))
    r = read_client.put(f"/api/v1/cdp/profiles/{anon}/consents", json={"consents": {"all": True}},
                        headers=auth(tenant.api_key))
    assert r.status_code == 200
    survivor = profile_by(read_client, tenant.api_key, "email", "km@example.com").json()
    assert survivor["id"] != anon and survivor["consents"]["all"]["granted"] is True


@pytest.mark.parametrize(("body", "code"), [
    ({"consents": {}}, "missing_consents"),
    ({"consents": {"newsletter": True}}, "unknown_consent_type"),
    ({"consents": {"email": "yes"}}, "invalid_parameter"),
    ({"email": True}, "invalid_parameter"),
])
def test_bad_consent_bodies_are_400(ingest_client, read_client, tenant, drain, body, code):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "kb@example.com")))
    pid = profile_by(read_client, tenant.api_key, "email", "kb@example.com").json()["id"]
    r = read_client.put(f"/api/v1/cdp/profiles/{pid}/consents", json=body, headers=auth(tenant.api_key))
    assert r.status_code == 400 and r.json()["code"] == code, r.text


def test_unknown_profile_graph_and_consents_are_404(read_client, tenant):
    for suffix in ("graph", "consents"):
        r = read_client.get(f"/api/v1/cdp/profiles/00000000-0000-0000-0000-000000000001/{suffix}",
                            headers=auth(tenant.api_key))
        assert r.status_code == 404
    r = read_client.put("/api/v1/cdp/profiles/00000000-0000-0000-0000-000000000001/consents",
                        json={"consents": {"email": True}}, headers=auth(tenant.api_key))
    assert r.status_code == 404
