"""The web pages in headless Chromium against a real read API server (a subprocess).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``); without them these tests FAIL, they are not skipped. Selenium drives the
system chromedriver and never downloads anything (SE_OFFLINE). Screenshots go to
test-artifacts/pages/, and also to docs/screenshots/ when STRATUM_SAVE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.roi import RoiInputs, project_roi
from stratum.queue import events_queue

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "pages"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000"]


@pytest.fixture(scope="module")
def read_server(settings):
    """Base URL of ``stratum read-api`` on a free port, serving the test database and Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = (ARTIFACTS / "read-api.log").open("wb")
    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
           "STRATUM_QUEUE_NAME": settings.queue_name}
    proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", "read-api", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"read API did not start; see {ARTIFACTS / 'read-api.log'}", pytrace=False)
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through the system chromedriver; fails (never skips) when missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = [name for name, ok in (("chromium", chromium), ("chromium-driver", os.path.exists(CHROMEDRIVER))) if not ok]
    if missing:
        pytest.fail(f"browser tests need Debian packages {', '.join(missing)}: "
                    "apt-get update && apt-get install -y chromium chromium-driver", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("browser tests need selenium: pip install -e '.[dev]'", pytrace=False)
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory(prefix="stratum-chromium-") as profile:
        mp.setenv("SE_OFFLINE", "true")  # selenium-manager must not download drivers or browsers
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


class Page:
    """The browser on one page of the read server, with a fresh sessionStorage (no key)."""

    def __init__(self, driver, base: str) -> None:
        self.driver, self.base = driver, base

    def open(self, path: str) -> Page:
        self.driver.get(self.base + path)
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get(self.base + path)
        return self

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, predicate, message: str):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # Stale elements: the page navigated or re-rendered between find and use; look again.
        return WebDriverWait(self.driver, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda _: predicate(), message)

    def text(self, css: str) -> str:
        return self.find(css).text

    def wait_text(self, css: str, expected: str) -> None:
        try:
            self.wait(lambda: self.find_all(css) and self.text(css) == expected, f"{css} == {expected!r}")
        except Exception:
            texts = [e.text for e in self.find_all(css)]
            raise AssertionError(f"{css}: expected {expected!r}, page shows {texts}") from None

    def type_into(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def save_key(self, key: str) -> None:
        self.type_into("#key", key)
        self.find("#key-form button[type=submit]").click()

    def screenshot(self, name: str, height: int | None = None) -> None:
        if height:
            self.driver.set_window_size(1280, height)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
        if os.environ.get("STRATUM_SAVE_SCREENSHOTS") == "1":
            docs = ROOT / "docs" / "screenshots"
            docs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ARTIFACTS / f"{name}.png", docs / f"{name}.png")
        self.driver.set_window_size(1280, 1000)


@pytest.fixture
def page(browser, read_server, redis_conn, db):
    """A Page; afterwards, the console must hold no script error or CSP violation (answers
    like 401 or 404 that the page expects are logged as failed loads and allowed)."""
    browser.get_log("browser")  # drop what earlier tests left
    yield Page(browser, read_server)
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]
    assert not errors, f"browser console errors: {errors}"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _post_events(ingest_client, tenant, events: list[dict]) -> None:
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events}, headers=_auth(tenant.write_key))
    assert r.status_code == 202 and r.json()["rejected"] == 0, r.text


def _event(name: str, identifiers: list[tuple[str, str]], minutes_ago: float = 0, **extra) -> dict:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"event_name": name, "event_time": at.isoformat(),
            "identifiers": [{"type": t, "value": v} for t, v in identifiers], **extra}


DEFAULT_OUTPUTS = {"#out-current": "875", "#out-projected": "1,875", "#out-incremental": "+1,000",
                   "#out-revenue": "$500,000", "#out-profit": "$200,000", "#out-roi": "9,900%",
                   "#out-payback": "<1", "#out-net12": "$2,376,000"}


def test_calculator_defaults_one_change_validation_and_locale(page):
    page.open("/cdp-calculator")
    for css, expected in DEFAULT_OUTPUTS.items():
        page.wait_text(css, expected)
    page.screenshot("calculator", height=1150)

    page.type_into("#in-monthly_sessions", "50000")
    for css, expected in {"#out-current": "437.5", "#out-projected": "937.5", "#out-incremental": "+500",
                          "#out-revenue": "$250,000", "#out-profit": "$100,000", "#out-roi": "4,900%"}.items():
        page.wait_text(css, expected)

    page.type_into("#in-conversion_rate_pct", "12")
    page.wait_text("#err-conversion_rate_pct", "must be between 0.5 and 10")
    page.wait_text("#out-revenue", "—")
    assert page.find("#in-conversion_rate_pct").get_attribute("aria-invalid") == "true"
    page.type_into("#in-conversion_rate_pct", "2.5")
    page.wait_text("#out-revenue", "$250,000")

    from selenium.webdriver.support.ui import Select

    Select(page.find("#currency")).select_by_value("AED")
    Select(page.find("#locale")).select_by_value("ar-AE")
    expected = page.driver.execute_script(
        "return new Intl.NumberFormat('ar-AE', {style: 'currency', currency: 'AED', maximumFractionDigits: 0})"
        ".format(250000)")
    # textContent: WebElement.text drops the bidi marks ar-AE puts around the amount.
    page.wait(lambda: page.driver.execute_script("return document.getElementById('out-revenue').textContent") == expected,
              f"revenue formatted as {expected!r}")
    assert "AED" in expected or "د.إ" in expected


def test_roi_js_module_matches_core_roi(page):
    cases = [RoiInputs(), RoiInputs(monthly_sessions=50_000),
             RoiInputs(current_match_rate_pct=70, match_rate_improvement_pts=60, conversion_rate_pct=7.3),
             RoiInputs(monthly_sessions=10_000, conversion_rate_pct=0.5, average_order_value=50, gross_margin_pct=10,
                       match_rate_improvement_pts=10, monthly_cdp_cost=10_000),
             RoiInputs(monthly_sessions=123_457, conversion_rate_pct=3.3, average_order_value=77.7,
                       gross_margin_pct=33, current_match_rate_pct=21, match_rate_improvement_pts=13,
                       monthly_cdp_cost=9_999)]
    page.open("/cdp-calculator")
    results = page.driver.execute_async_script(
        "const [cases, done] = arguments;"
        "import('/pages/static/roi.js').then(m => done(cases.map(c => m.projectRoi(c))), e => done(String(e)));",
        [vars(c) for c in cases])
    assert isinstance(results, list), results
    for inputs, js in zip(cases, results, strict=True):
        py = project_roi(inputs)
        assert js["currentAttributed"] == pytest.approx(py.current_attributed)
        assert js["projectedAttributed"] == pytest.approx(py.projected_attributed)
        assert js["incrementalRevenue"] == pytest.approx(py.incremental_revenue)
        assert js["incrementalGrossProfit"] == pytest.approx(py.incremental_gross_profit)
        assert js["monthlyRoi"] == pytest.approx(py.monthly_roi)
        assert js["twelveMonthNet"] == pytest.approx(py.twelve_month_net)
        assert (js["paybackMonths"] is None) == (py.payback_months is None)
        if py.payback_months is not None:
            assert js["paybackMonths"] == pytest.approx(py.payback_months)


def test_calculator_uses_my_data(page, ingest_client, tenant, drain):
    # Half of the events belong to a profile with an email: match rate 50 %.
    _post_events(ingest_client, tenant, [
        _event("Viewed", [("email", "known@example.com")]), _event("Bought", [("email", "known@example.com")]),
        _event("Viewed", [("anonymous_id", "anon-x")]), _event("Viewed", [("anonymous_id", "anon-y")])])
    assert drain() == 0
    page.open("/cdp-calculator")
    page.find("#use-my-data").click()
    page.wait(lambda: "Could not read" in page.text("#my-data-message"), "an error without a key")
    page.save_key(tenant.api_key)
    page.find("#use-my-data").click()
    page.wait(lambda: "Filled in" in page.text("#my-data-message"), "stats applied")
    assert page.driver.execute_script("return document.getElementById('in-current_match_rate_pct').value") == "50"
    assert page.driver.execute_script("return document.getElementById('in-monthly_sessions').value") == "10000"
    assert "4 events" in page.text("#my-data-message") and "clamped" in page.text("#my-data-message")


def _seed_profile(ingest_client, tenant, drain, n_views: int = 30) -> None:
    """Jane: an anonymous visitor merged into her email profile, a device, a user id, traits and events."""
    _post_events(ingest_client, tenant, [_event("Page Viewed", [("anonymous_id", "anon-jane")], minutes_ago=90)])
    assert drain() == 0
    _post_events(ingest_client, tenant, [_event("Signed Up", [("email", "jane@example.com"), ("device_id", "dev-1")],
                                                minutes_ago=60, consent={"email": True, "ads": False})])
    assert drain() == 0
    _post_events(ingest_client, tenant, [_event("Viewed", [("anonymous_id", "anon-jane"), ("email", "jane@example.com")],
                                                minutes_ago=50 - i / 10, properties={"i": i}) for i in range(n_views)])
    r = ingest_client.post("/v1/identify", json={"userId": "user-jane", "messageId": "id-1",
                                                 "traits": {"email": "jane@example.com", "plan": "pro"}},
                           headers=_auth(tenant.write_key))
    assert r.status_code == 200, r.text
    assert drain() == 0


def test_profiles_need_a_key_then_search_timeline_and_graph(page, ingest_client, read_client, tenant, drain):
    _seed_profile(ingest_client, tenant, drain)
    profile = read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "email",
                                                              "identifier_value": "jane@example.com"},
                              headers=_auth(tenant.api_key)).json()
    graph = read_client.get(f"/api/v1/cdp/profiles/{profile['id']}/graph", headers=_auth(tenant.api_key)).json()
    assert graph["merges"], "the seed should have merged the anonymous profile"

    page.open(f"/profiles/{profile['id']}")
    assert not page.find("#tenant-view").is_displayed()
    assert "tenant API key" in page.text("#page-message")
    assert not page.find_all("svg .graph-node")

    page.driver.get(f"{page.base}/profiles")  # same tab: sessionStorage stays
    page.save_key(tenant.api_key)
    page.type_into("#identifier-value", "nobody@example.com")
    page.find("#search button[type=submit]").click()
    page.wait(lambda: "No profile holds" in page.text("#search-message"), "a miss is reported")
    page.type_into("#identifier-value", "Jane@Example.com")
    page.find("#search button[type=submit]").click()
    page.wait(lambda: page.driver.current_url.endswith(f"/profiles/{profile['id']}") and page.find("#profile").is_displayed(),
              "the search opens the profile")

    assert page.text("#profile-id") == profile["id"]
    assert page.text("#profile-lifecycle") == profile["lifecycle"]
    assert "plan" in page.text("#traits") and "pro" in page.text("#traits")
    assert "email" in page.text("#consents") and "granted" in page.text("#consents")
    nodes = page.find_all("svg.identity-graph g.graph-node")
    assert len(nodes) == len(profile["identifiers"]) == len(graph["nodes"])
    assert {n.get_attribute("data-ref") for n in nodes} == {f"{i['type']}:{i['hash']}" for i in profile["identifiers"]}
    assert len(page.find_all("svg.identity-graph g.graph-edge")) == len(graph["edges"])
    assert page.find_all("svg.identity-graph g.merge-trigger"), "the merge trigger is marked"
    assert len(page.find_all("#merges tr.merge")) == len(graph["merges"])

    total = profile["counters"]["events"]
    assert total > 25
    assert len(page.find_all("#events li.event")) == 25
    page.screenshot("profile", height=2200)
    page.find("#more-events").click()
    page.wait(lambda: len(page.find_all("#events li.event")) == total, "the second page of events")
    assert not page.find("#more-events").is_displayed()
    ids = [li.get_attribute("data-event-id") for li in page.find_all("#events li.event")]
    assert len(set(ids)) == total

    page.find("#key-forget").click()
    page.wait(lambda: not page.find_all("svg .graph-node") and not page.find_all("#events li"), "data removed")


def test_profile_page_lists_decisions_and_explains_two_identifiers(page, ingest_client, read_client, tenant, drain):
    """The decision log beside the graph, and "why is X with Y?" highlighting the path."""
    from core.identifiers import normalize_identifier

    _seed_profile(ingest_client, tenant, drain, n_views=1)
    profile = read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "email",
                                                              "identifier_value": "jane@example.com"},
                              headers=_auth(tenant.api_key)).json()
    decisions = read_client.get(f"/api/v1/cdp/profiles/{profile['id']}/decisions",
                                headers=_auth(tenant.api_key)).json()["decisions"]
    assert {"link", "merge"} <= {d["kind"] for d in decisions}

    page.open(f"/profiles/{profile['id']}")
    page.save_key(tenant.api_key)
    page.wait(lambda: page.find("#profile").is_displayed() and page.find_all("#decisions tr.decision"),
              "the profile and its decisions load")
    rows = page.find_all("#decisions tr.decision")
    assert len(rows) == len(decisions)
    assert page.find_all("#decisions tr.kind-merge"), "the merge is listed"

    ref = {t: f"{t}:{normalize_identifier(t, v).hash}" for t, v in (("device_id", "dev-1"),
                                                                     ("anonymous_id", "anon-jane"))}
    page.find(f'g.graph-node[data-ref="{ref["device_id"]}"]').click()
    page.find(f'g.graph-node[data-ref="{ref["anonymous_id"]}"]').click()
    page.find("#explain button[type=submit]").click()
    page.wait(lambda: page.find_all("#explain-path li.path-step"), "the path is listed")
    expected = read_client.get("/api/v1/cdp/identity/explain", headers=_auth(tenant.api_key), params={
        "a_type": "device_id", "a_value": "dev-1", "b_type": "anonymous_id", "b_value": "anon-jane"}).json()
    assert len(page.find_all("#explain-path li.path-step")) == len(expected["path"]) > 0
    on_path = {g.get_attribute("data-ref") for g in page.find_all("svg.identity-graph g.graph-node.on-path")}
    assert {ref["device_id"], ref["anonymous_id"]} <= on_path
    assert page.find_all("svg.identity-graph g.graph-edge.on-path")
    page.screenshot("profile-explain", height=2200)


def test_profile_page_undoes_a_merge_for_admin_keys_only(page, ingest_client, read_client, tenant, drain, db):
    """"undo this merge" beside each merge for an admin key (none for a read key); after it the
    absorbed visitor is a profile of its own again and the merge leaves the graph."""
    import uuid

    from stratum.admin import create_tenant_key

    _seed_profile(ingest_client, tenant, drain, n_views=3)
    lookup = {"identifier_type": "email", "identifier_value": "jane@example.com"}
    profile = read_client.get("/api/v1/cdp/profiles", params=lookup, headers=_auth(tenant.api_key)).json()
    merges = read_client.get(f"/api/v1/cdp/profiles/{profile['id']}/graph", headers=_auth(tenant.api_key)).json()["merges"]
    assert len(merges) == 1
    with db.transaction():
        read_key = create_tenant_key(db, uuid.UUID(tenant.id), "read").key

    page.open(f"/profiles/{profile['id']}")
    page.save_key(read_key)
    page.wait(lambda: page.find("#profile").is_displayed() and page.find_all("#merges tr.merge"), "the merge is listed")
    assert not page.find_all("button.undo-merge"), "a read key gets no undo button"

    page.find("#key-forget").click()
    page.save_key(tenant.api_key)
    page.wait(lambda: page.find_all("button.undo-merge"), "an admin key gets the undo button")
    page.find(f'button.undo-merge[data-merge-id="{merges[0]["id"]}"]').click()
    page.wait(lambda: page.driver.switch_to.alert, "the page asks to confirm").accept()
    page.wait(lambda: page.find("#merge-message").is_displayed() and not page.find_all("#merges tr.merge"),
              "the merge is undone and leaves the graph")
    assert merges[0]["absorbed"] in page.text("#merge-message")
    anon = read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "anonymous_id",
                                                            "identifier_value": "anon-jane"},
                           headers=_auth(tenant.api_key)).json()
    assert anon["id"] == merges[0]["absorbed"] != profile["id"]
    assert page.find_all("#decisions tr.kind-unmerge"), "the unmerge decision is listed"
    page.screenshot("profile-unmerge", height=2200)


def test_profile_page_shows_new_events_live(page, ingest_client, tenant, drain, redis_conn):
    """The page subscribes to the live stream (a real read-api process, Redis pub/sub) and
    prepends the profile's new events as a worker commits them."""
    from stratum.queue.deliveries import stream_channel
    from workers.stream import LISTENERS_CACHE_S

    _post_events(ingest_client, tenant, [_event("Signed Up", [("email", "live@example.com")], minutes_ago=5)])
    assert drain() == 0
    page.open("/profiles")
    page.save_key(tenant.api_key)
    page.type_into("#identifier-value", "live@example.com")
    page.find("#search button[type=submit]").click()
    page.wait(lambda: page.find("#profile").is_displayed() and len(page.find_all("#events li.event")) == 1,
              "the profile with its one event")
    page.wait(lambda: redis_conn.pubsub_numsub(stream_channel(tenant.id))[0][1] > 0, "the page is streaming")
    # Workers look up whether anyone streams a tenant at most once per LISTENERS_CACHE_S, and
    # the first drain above found nobody: the next batch is streamed once that answer expires.
    time.sleep(LISTENERS_CACHE_S + 0.1)
    r = ingest_client.post("/api/v1/cdp/events", headers=_auth(tenant.write_key), json={
        "events": [_event("Order Completed", [("email", "live@example.com")], minutes_ago=0)]})
    assert r.status_code == 202 and drain() == 0
    new_id = r.json()["results"][0]["event_id"]
    page.wait(lambda: page.find("#events li.event").get_attribute("data-event-id") == new_id,
              "the new event arrives on top without a reload")
    assert len(page.find_all("#events li.event")) == 2


def test_ops_lists_a_failed_job_and_replays_it(page, ingest_client, tenant, db, settings, redis_conn, drain):
    from stratum.admin import create_operator
    from workers.worker import build_worker

    with db.transaction():
        operator_key = create_operator(db, "ops-browser").key
    _post_events(ingest_client, tenant, [_event("Viewed", [("anonymous_id", f"v-{i}")]) for i in range(12)])
    r = ingest_client.post("/v1/batch", json={"batch": [{"type": "track", "event": "ok", "userId": "u-1"},
                                                        {"type": "track", "event": "no identifier"}]},
                           headers=_auth(tenant.write_key))
    assert r.status_code == 200 and len(r.json()["rejected"]) == 1, r.text
    assert drain() == 0
    job_id = events_queue(redis_conn, settings.queue_name).enqueue("workers.jobs.process_batch", b"\x93bad").id
    assert drain() == 1
    worker = build_worker(settings, redis_conn)
    worker.register_birth()  # a worker to list (idle, no heartbeat)
    worker.set_state("idle")
    try:
        page.open("/ops")
        assert not page.find("#ops").is_displayed()
        page.save_key(tenant.api_key)
        page.wait(lambda: "operator key" in page.text("#ops-message") and "403" in page.text("#ops-message"),
                  "a tenant key is refused")
        page.save_key(operator_key)
        row = f'#failed tr.failed-job[data-job-id="{job_id}"]'
        page.wait(lambda: page.find_all(row), "the failed job is listed")
        assert "Error" in page.text(f"{row} td.reason")
        page.wait(lambda: page.find_all("#workers tr.worker-row"), "the worker is listed")
        assert worker.name in page.text("#workers")
        assert page.text("#card-failed .card-value") == "1"
        assert "1" in page.text("#dead-letters tbody")
        page.wait(lambda: page.text("#card-out .card-value") != "–", "a second sample gives events/s out")
        page.screenshot("ops", height=1100)

        page.find(f"{row} button.replay").click()
        page.wait(lambda: not page.find_all(row), "the replayed job leaves the failed list")
        assert "Re-enqueued 1 job" in page.text("#replay-message")
        assert events_queue(redis_conn, settings.queue_name).job_ids == [job_id]
    finally:
        worker.register_death()


def test_swagger_ui_renders_from_local_assets_under_its_csp(page, read_server):
    """/schema in a real browser: the operations render, every resource came from this
    server (no CDN), and the page fixture finds no CSP violation or script error."""
    page.open("/schema")
    page.wait(lambda: page.find_all(".swagger-ui .info .title"), "Swagger UI rendered its title")
    assert "Stratum CDP read API" in page.text(".swagger-ui .info .title")
    page.wait(lambda: len(page.find_all(".opblock")) > 10, "operations listed")
    resources = page.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(read_server + "/schema/") for url in resources), resources
