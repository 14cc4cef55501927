"""Audience pages in headless Chromium against a real read API server: the /segments builder
(pickers fed by the tenant's trait keys, the live count while editing, a rule error naming
its path, saving, members linked to their profile pages, the size chart) and the /ops
volume chart (baseline band, anomalies marked)."""

from __future__ import annotations

from test_pages_browser import browser, page, read_server  # noqa: F401 - fixtures
from test_read_support import event, ingest_and_drain, profile_by


def _select(on, css: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(on.find(css)).select_by_value(value)


def test_build_preview_save_and_browse_a_segment(page, read_client, ingest_client, drain, tenant):  # noqa: F811
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "pro-1"), traits={"plan": "pro"}),
                     event("Signed Up", ("external_id", "free-1"), traits={"plan": "free"}))
    pro = profile_by(read_client, tenant.api_key, "external_id", "pro-1").json()["id"]

    page.open("/segments")
    page.wait(lambda: not page.find("#page-message").get_attribute("hidden"), "asks for a key")
    page.save_key(tenant.api_key)
    page.wait(lambda: page.find_all("#trait-keys option[value=plan]"), "trait keys picker filled")
    page.wait(lambda: page.find_all("#conditions .condition"), "a first condition row")

    page.type_into("#conditions .condition .cond-name", "plan")
    _select(page, "#conditions .condition .cond-op", "between")
    page.type_into("#conditions .condition .cond-value", "x")
    page.wait(lambda: "rules.all[0].value" in page.text("#rule-message"), "the error names the bad part")

    _select(page, "#conditions .condition .cond-op", "eq")
    page.type_into("#conditions .condition .cond-value", "pro")
    page.wait_text("#live-count", "1")
    page.find("#add-condition").click()
    rows = page.find_all("#conditions .condition")
    assert len(rows) == 2
    rows[1].find_element("css selector", ".remove").click()
    page.wait_text("#live-count", "1")

    page.type_into("#segment-name", "Pro plan")
    page.find("#save").click()
    page.wait(lambda: page.find_all(f"#members a[href='/profiles/{pro}']"), "members link to profiles")
    assert page.text("#detail-size") == "1 profiles"
    page.wait(lambda: page.find_all("#size-chart svg.size-chart polyline"), "size chart drawn")
    page.wait(lambda: "Pro plan" in page.text("#segments"), "listed among saved segments")
    page.screenshot("segments-builder", height=1300)

    # The profile page shows computed traits beside the sent ones.
    r = read_client.post("/api/v1/cdp/computed-traits", headers={"Authorization": f"Bearer {tenant.api_key}"},
                         json={"name": "signups", "function": "count", "event": "Signed Up", "within_days": 30})
    assert r.status_code == 201, r.text
    page.open(f"/profiles/{pro}")
    page.save_key(tenant.api_key)
    page.wait(lambda: "signups (computed)\n1" in page.text("#traits") or "signups (computed) 1" in page.text("#traits"),
              "computed trait on the profile page")


def test_ops_volume_chart_marks_anomalies(page, db, new_tenant, settings):  # noqa: F811
    import uuid

    from test_audience_jobs import _volume_history

    from stratum.admin import create_operator
    from workers.audience_jobs import detect_anomalies

    tenant = new_tenant()
    quiet = str(uuid.uuid4())
    db.execute("INSERT INTO sources (id, tenant_id, name, type, write_key_hash) VALUES (%s, %s, 'quiet', 'server', %s)",
               (quiet, tenant.id, uuid.uuid4().hex))
    _volume_history(db, tenant, quiet)
    detect_anomalies(db, settings)
    with db.transaction():
        operator = create_operator(db, "ops").key
    page.open("/ops")
    page.save_key(operator)
    page.wait(lambda: page.find_all(f"figure.volume[data-source='{quiet}'] svg .band"), "baseline band drawn")
    assert len(page.find_all(f"figure.volume[data-source='{quiet}'] circle.anomaly.drop")) == 24
    assert page.find_all(f"figure.volume[data-source='{tenant.source_id}'] polyline.observed")
    assert not page.find_all(f"figure.volume[data-source='{tenant.source_id}'] circle.anomaly")
    page.screenshot("ops-volume", height=1600)
