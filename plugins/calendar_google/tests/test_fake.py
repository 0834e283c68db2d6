"""The fake Google Calendar itself: it must behave like the real API where the plugin
(and other plugin authors) rely on it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from hookline_testkit.fake_google_calendar import FakeGoogleCalendar


async def client(fake: FakeGoogleCalendar) -> httpx.AsyncClient:
    async with httpx.AsyncClient() as http:
        token = await http.post(
            fake.token_uri,
            data={
                "grant_type": "refresh_token",
                "client_id": fake.client_id,
                "client_secret": fake.client_secret,
                "refresh_token": fake.refresh_token,
            },
        )
    assert token.status_code == 200
    body = token.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    return httpx.AsyncClient(
        base_url=fake.api_endpoint,
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )


def event(start: str, end: str, **extra: Any) -> dict[str, Any]:
    return {"start": {"dateTime": start}, "end": {"dateTime": end}, **extra}


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()["error"]
    assert body["code"] == response.status_code and body["message"]
    return response.status_code, body["errors"][0]["reason"]


async def test_token_endpoint_errors(google_calendar_fake: FakeGoogleCalendar) -> None:
    fake = google_calendar_fake
    async with httpx.AsyncClient() as http:
        bad = await http.post(fake.token_uri, data={
            "grant_type": "refresh_token", "client_id": fake.client_id,
            "client_secret": fake.client_secret, "refresh_token": "nope",
        })  # fmt: skip
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
        forged = await http.post(fake.token_uri, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln",
        })  # fmt: skip
        assert forged.status_code == 400
        anonymous = await http.get(fake.api_endpoint + "calendars/primary/events")
        assert error(anonymous) == (401, "authError")
        assert anonymous.json()["error"]["errors"][0]["location"] == "Authorization"


async def test_insert_get_patch_delete(google_calendar_fake: FakeGoogleCalendar) -> None:
    fake = google_calendar_fake
    async with await client(fake) as api:
        body = event("2026-03-09T09:00:00-05:00", "2026-03-09T09:30:00-05:00",
                     id="abcdef0123", summary="Oil change",
                     extendedProperties={"private": {"phone": "+1312"}})  # fmt: skip
        created = (await api.post("calendars/primary/events", json=body)).json()
        assert created["kind"] == "calendar#event" and created["status"] == "confirmed"
        assert created["id"] == "abcdef0123" and created["etag"] and created["iCalUID"]
        assert error(await api.post("calendars/primary/events", json=body)) == (409, "duplicate")
        bad_id = {**body, "id": "UPPER-case"}
        assert error(await api.post("calendars/primary/events", json=bad_id)) == (400, "invalid")
        backwards = event("2026-03-09T10:00:00Z", "2026-03-09T09:00:00Z")
        assert error(await api.post("calendars/primary/events", json=backwards))[0] == 400
        # Patch: objects merge, arrays replace, If-Match guards.
        patched = await api.patch(
            "calendars/primary/events/abcdef0123",
            json={"extendedProperties": {"private": {"bay": "2"}}, "attendees": [{"email": "a@b"}]},
            headers={"If-Match": created["etag"]},
        )
        assert patched.json()["extendedProperties"]["private"] == {"phone": "+1312", "bay": "2"}
        stale = await api.patch("calendars/primary/events/abcdef0123", json={"summary": "x"},
                                headers={"If-Match": created["etag"]})  # fmt: skip
        assert error(stale) == (412, "conditionNotMet")
        # Delete: 204, then the event reads as cancelled and its id stays taken.
        deleted = await api.delete("calendars/primary/events/abcdef0123")
        assert deleted.status_code == 204 and deleted.content == b""
        again = await api.delete("calendars/primary/events/abcdef0123")
        assert error(again) == (410, "deleted")
        gone = await api.get("calendars/primary/events/abcdef0123")
        assert gone.json()["status"] == "cancelled"
        assert error(await api.post("calendars/primary/events", json=body)) == (409, "duplicate")
        missing = await api.get("calendars/primary/events/nosuchevent")
        assert error(missing) == (404, "notFound")
        assert error(await api.get("calendars/other/events")) == (404, "notFound")


async def test_list_filters(google_calendar_fake: FakeGoogleCalendar) -> None:
    fake = google_calendar_fake
    async with await client(fake) as api:
        for i, (start, end) in enumerate(
            [("09:00", "10:00"), ("10:00", "11:00"), ("11:00", "12:00")]
        ):
            await api.post("calendars/primary/events", json=event(
                f"2026-03-09T{start}:00Z", f"2026-03-09T{end}:00Z", summary=f"Job {i}",
                extendedProperties={"private": {"phone": "+1" if i != 1 else "+2", "n": str(i)}},
            ))  # fmt: skip

        async def listed(**params: Any) -> list[str]:
            response = await api.get("calendars/primary/events", params=params)
            assert response.status_code == 200, response.text
            return [e["summary"] for e in response.json()["items"]]

        # timeMin excludes events ending at it; timeMax excludes events starting at it.
        window = {"timeMin": "2026-03-09T10:00:00Z", "timeMax": "2026-03-09T11:00:00Z"}
        assert await listed(**window, singleEvents="true", orderBy="startTime") == ["Job 1"]
        assert await listed(privateExtendedProperty="phone=+1", singleEvents="true",
                            orderBy="startTime") == ["Job 0", "Job 2"]  # fmt: skip
        both = [("privateExtendedProperty", "phone=+1"), ("privateExtendedProperty", "n=2")]
        response = await api.get("calendars/primary/events", params=both)
        assert [e["summary"] for e in response.json()["items"]] == ["Job 2"]
        assert await listed(q="job 0") == ["Job 0"]
        page = (await api.get("calendars/primary/events",
                              params={"maxResults": 2, "singleEvents": "true",
                                      "orderBy": "startTime"})).json()  # fmt: skip
        assert len(page["items"]) == 2 and page["nextPageToken"]
        unordered = await api.get("calendars/primary/events", params={"orderBy": "startTime"})
        assert error(unordered) == (400, "badRequest")
        empty = await api.get("calendars/primary/events", params={
            "timeMin": "2026-03-09T11:00:00Z", "timeMax": "2026-03-09T10:00:00Z"})  # fmt: skip
        assert error(empty) == (400, "timeRangeEmpty")


async def test_freebusy_through_the_google_client(google_calendar_fake: FakeGoogleCalendar) -> None:
    import google.oauth2.credentials
    import googleapiclient.discovery

    fake = google_calendar_fake
    fake.add_event(
        start={"dateTime": "2026-03-09T14:00:00Z"}, end={"dateTime": "2026-03-09T15:00:00Z"}
    )
    fake.add_event(
        start={"dateTime": "2026-03-09T14:30:00Z"}, end={"dateTime": "2026-03-09T15:30:00Z"}
    )
    fake.add_event(start={"dateTime": "2026-03-09T18:00:00Z"},
                   end={"dateTime": "2026-03-09T19:00:00Z"},
                   transparency="transparent")  # fmt: skip

    def query() -> dict[str, Any]:
        creds = google.oauth2.credentials.Credentials(
            token=None, refresh_token=fake.refresh_token, client_id=fake.client_id,
            client_secret=fake.client_secret, token_uri=fake.token_uri,
            scopes=["https://www.googleapis.com/auth/calendar"],
        )  # fmt: skip
        service = googleapiclient.discovery.build(
            "calendar", "v3", credentials=creds, static_discovery=True, cache_discovery=False,
            client_options={"api_endpoint": fake.api_endpoint},
        )  # fmt: skip
        body = {"timeMin": "2026-03-09T13:00:00-00:00", "timeMax": "2026-03-09T21:00:00Z",
                "items": [{"id": "primary"}, {"id": "bad@x"}]}  # fmt: skip
        return service.freebusy().query(body=body).execute()

    result = await trio.to_thread.run_sync(query)
    assert result["kind"] == "calendar#freeBusy"
    assert result["calendars"]["primary"]["busy"] == [
        {"start": "2026-03-09T14:00:00Z", "end": "2026-03-09T15:30:00Z"}
    ]
    assert result["calendars"]["bad@x"]["errors"] == [{"domain": "global", "reason": "notFound"}]


@pytest.mark.parametrize("status", [429, 500, 403])
async def test_faults_on_demand(google_calendar_fake: FakeGoogleCalendar, status: int) -> None:
    fake = google_calendar_fake
    async with await client(fake) as api:
        fake.fail(status, retry_after=3 if status == 429 else None)
        failed = await api.get("calendars/primary/events")
        code, reason = error(failed)
        assert code == status
        assert (
            reason
            == {429: "rateLimitExceeded", 500: "backendError", 403: "rateLimitExceeded"}[status]
        )
        if status == 429:
            assert failed.headers["retry-after"] == "3"
        assert (await api.get("calendars/primary/events")).status_code == 200
    assert [r.status for r in fake.api_requests()] == [status, 200]
