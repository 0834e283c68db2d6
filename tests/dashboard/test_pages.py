"""The dashboard in a real headless Chromium against a server that took simulated calls."""

from __future__ import annotations

import datetime as dt
import threading

import httpx
import trio

from hookline import Storage
from hookline.dashboard.app import CSP
from hookline.outbox.store import Notification, notification_id
from hookline_example_tow import Towed, TowStore
from hookline_example_tow.store import SCHEMA as TOW_SCHEMA
from hookline_messages import Message, MessageStore

from .conftest import PASSWORD, Server, shot, sign_in

ROUTES = [
    "/admin/",
    "/admin/calls",
    "/admin/calls/x",
    "/admin/api/today",
    "/admin/api/calls/x",
    "/admin/work",
    "/admin/trends",
    "/admin/api/trends",
    "/admin/static/dashboard.js",
    "/admin/static/vendor/uPlot.iife.min.js",
]


def test_every_route_needs_a_sign_in(server: Server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        for route in ROUTES:
            r = client.get(route)
            assert r.status_code in (303, 401), (route, r.status_code)
            assert r.headers["content-security-policy"] == CSP, route
            if r.status_code == 303:
                assert r.headers["location"].startswith("/admin/login"), route
            assert "oil change" not in r.text
        for route in ("/admin/work/messages/M1", "/admin/work/tows/T1", "/admin/logout"):
            assert client.post(route, data={"csrf": "x"}).status_code == 401, route
        # A forged cookie is no session.
        client.cookies.set("hookline_admin", "forged.value.sig")
        r = client.get("/admin/api/today")
        assert r.status_code == 401


def test_sign_in_then_the_call_page_shows_transcript_and_waterfall(page, server: Server):
    page.goto(server.url + "/admin/calls")
    assert "/admin/login" in page.url
    shot(page, "0-login")
    sign_in(page, server, "/admin/calls")
    assert page.url.endswith("/admin/calls")
    cookie = next(c for c in page.context.cookies() if c["name"] == "hookline_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    rows = page.locator("#calls tbody tr")
    assert rows.count() >= 1
    shot(page, "2-calls")
    page.click(f"a[href='/admin/calls/{server.first_call}']")
    page.wait_for_selector("#transcript")
    text = page.inner_text("#transcript")
    assert "I need an oil change" in text
    assert "Sure, we can do an oil change" in text
    tool = page.locator("details.tool").first
    assert "take_message ok" in tool.inner_text()
    tool.click()
    assert "Sam Ortiz" in tool.inner_text()  # the arguments
    bars = page.locator("figure.waterfall rect.part")
    assert page.locator("figure.waterfall rect.part.tool").count() == 1  # the tool round
    assert bars.count() >= 2  # drawn: several parts of one reply
    # The parts add up to the turn's voice-to-voice, as the label says.
    label = page.locator("figure.waterfall svg").first.get_attribute("aria-label")
    total = float(label.split()[2].replace(",", ""))
    parts = page.locator("figure.waterfall").first.locator("rect.part")
    summed = sum(float(parts.nth(i).get_attribute("data-ms")) for i in range(parts.count()))
    assert abs(summed - total) <= 1.0, (summed, total)
    shot(page, "3-call")
    assert not page.csp_errors, page.csp_errors


def test_the_call_list_filters(page, server: Server):
    sign_in(page, server, "/admin/calls?tool=take_message&outcome=caller_hangup&caller=5550100")
    assert page.locator(f"a[href='/admin/calls/{server.first_call}']").count() == 1
    page.goto(server.url + "/admin/calls?caller=0000000")
    assert page.locator("#calls tbody tr.empty").count() == 1
    page.goto(server.url + "/admin/calls?booked=yes")
    assert page.locator("#calls tbody tr.empty").count() == 1  # nothing was booked


def test_a_live_call_appears_and_disappears(page, server: Server):
    sign_in(page, server)
    hold_ready = threading.Event()
    holder: dict = {}

    async def make_hold():
        holder["hold"] = trio.Event()
        hold_ready.set()

    server.run(make_hold)
    result: dict = {}
    caller = threading.Thread(
        target=lambda: result.update(id=server.run(server.one_call, "hello", holder["hold"]))
    )
    caller.start()
    try:
        page.wait_for_selector("#live-rows tr[data-call]", timeout=60_000)
        assert page.inner_text("#live-count") == "1"
        state = page.inner_text("#live-rows tr[data-call] .state")
        assert state in ("listening", "speaking", "in a tool")
        shot(page, "1-today-live")
    finally:
        server.run(_set, holder["hold"])
        caller.join(90)
    page.wait_for_selector("#live-rows tr.empty", timeout=60_000)
    assert page.locator("#live-rows tr[data-call]").count() == 0
    assert not page.csp_errors, page.csp_errors


async def _set(event: trio.Event) -> None:
    event.set()


def test_a_message_marked_done_stays_done(page, server: Server):
    store = MessageStore(server.workdir / "messages.duckdb")
    stored, _ = store.add_sync(
        Message(
            id="MTEST0000001",
            created=dt.datetime.now(dt.UTC),
            name="Dana Ruiz",
            callback_number="+15550123",
            reason="Wants a quote for brakes",
        )
    )
    sign_in(page, server, "/admin/work")
    row = page.locator(f"tr[data-message='{stored.id}']")
    assert row.locator(".status").inner_text() == "new"
    row.locator("button.done").click()
    page.wait_for_load_state()
    page.reload()
    row = page.locator(f"tr[data-message='{stored.id}']")
    assert row.locator(".status").inner_text() == "handled"
    assert row.locator("button.done").count() == 0
    assert store.recent_sync(10)[0].status == "handled"
    shot(page, "4-work")


def test_a_failed_notification_is_listed_and_retried(page, server: Server):
    # The sender is not running in this server: a requeued notification stays pending.
    assert server.runtime is not None and server.runtime.outbox.store is not None
    store = server.runtime.outbox.store
    n = Notification(id=notification_id("test:failed"), key="test:failed", channel="webhook",
                     kind="message.taken", payload={"name": "Dana"})  # fmt: skip
    store.add_sync(n)
    store.record_attempt_sync(n.id, "failed", "HTTP 500 from the shop's receiver")
    sign_in(page, server, "/admin/work")
    row = page.locator(f"tr[data-notification='{n.id}']")
    assert "HTTP 500" in row.inner_text() and "message.taken" in row.inner_text()
    row.locator("button.done").click()
    page.wait_for_load_state()
    page.reload()
    assert page.locator(f"tr[data-notification='{n.id}']").count() == 0
    assert store.get_sync(n.id).status == "pending"


def test_a_tow_request_marked_done_stays_done(page, server: Server):
    store = TowStore(Storage().database(
        file=server.workdir / "tows.duckdb", schema=TOW_SCHEMA, provider="test"
    ))  # fmt: skip
    entry = Towed(
        id="tow-test-1", reference="T04242", call_id=server.first_call,
        received_at=dt.datetime.now(dt.UTC), location="Route 9 by the Shell station",
        vehicle="2014 blue Civic", problem="flat tire", callback_number="+15550100",
        eta_minutes=45,
    )  # fmt: skip
    trio.run(store.add, entry)
    sign_in(page, server, "/admin/work")
    row = page.locator("tr[data-tow='T04242']")
    row.locator("button.done").click()
    page.wait_for_load_state()
    page.reload()
    row = page.locator("tr[data-tow='T04242']")
    assert row.locator("button.done").count() == 0
    assert "done" in row.inner_text()
    (stored,) = trio.run(store.recent)
    assert stored.reference == "T04242" and stored.done and stored.done_at is not None


def test_a_post_without_the_csrf_token_is_refused(page, server: Server):
    store = MessageStore(server.workdir / "messages.duckdb")
    stored, _ = store.add_sync(
        Message(
            id="MTEST0000002",
            created=dt.datetime.now(dt.UTC),
            name="Lee",
            callback_number="+15550124",
            reason="Call back",
        )
    )
    sign_in(page, server, "/admin/work")
    # Signed in (the cookie goes along), but no token: refused, nothing changed.
    r = page.request.post(f"{server.url}/admin/work/messages/{stored.id}", form={"x": "1"})
    assert r.status == 403
    r = page.request.post(
        f"{server.url}/admin/work/messages/{stored.id}", form={"csrf": "not-the-token"}
    )
    assert r.status == 403
    assert next(m for m in store.recent_sync(10) if m.id == stored.id).status == "new"


def test_trends_draws_charts(page, server: Server):
    sign_in(page, server, "/admin/trends")
    page.wait_for_selector("body[data-charts]", state="attached")
    assert page.get_attribute("body", "data-charts") == "5"
    shot(page, "5-trends")
    assert not page.csp_errors, page.csp_errors


def test_wrong_passwords_are_rate_limited(server: Server):
    with httpx.Client(base_url=server.url, headers={"x-test": "limit"}) as client:
        client.get("/admin/login")
        csrf = _csrf(client.get("/admin/login").text)
        codes = [
            client.post("/admin/login", data={"csrf": csrf, "password": "wrong"}).status_code
            for _ in range(6)
        ]
        assert codes[:5] == [401] * 5 and codes[5] == 429
        # Even the right password waits now.
        r = client.post("/admin/login", data={"csrf": csrf, "password": PASSWORD})
        assert r.status_code == 429


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_pages_ask_for_nothing_the_dashboard_does_not_have(page, server: Server):
    # Chromium asks for /favicon.ico on its own (not on every load) unless the page
    # names an icon; the dashboard has none to give, so that logged a 404.
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if "status of 404" in m.text else None)
    page.goto(server.url + "/admin/login")
    assert page.locator("link[rel=icon]").count() == 1
    sign_in(page, server, "/admin/")
    for path in ("/admin/", "/admin/calls"):
        page.goto(server.url + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("link[rel=icon]").count() == 1, path
    assert not errors, errors
