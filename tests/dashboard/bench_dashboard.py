"""Voice-to-voice with the dashboard open and refreshing vs not (issue 16, item 6).

    uv run python tests/dashboard/bench_dashboard.py --calls 12

Runs the page-test server (real Twilio provider over loopback, scripted STT/LLM/TTS,
analytics on), places calls one after another, and reads each answer's voice-to-voice
from the analytics; the second half of the run does it while a client signed in to
/admin fetches Today, the call list, a call page and the trends JSON as fast as it can
(4 requests in flight), and in between with one page refreshing. The clients run in the
same process as the server (sharing its GIL): the hammered figure is a worst case.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.dashboard.conftest import PASSWORD, Server


def v2v(server: Server, client: httpx.Client, call_id: str) -> float:
    call = client.get(f"/admin/api/calls/{call_id}").json()
    [ms] = [sum(p[2] for p in t["waterfall"]) for t in call["turn_rows"] if t["waterfall"]]
    return ms


def signed_in(server: Server) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=60)
    html = client.get("/admin/login").text
    csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    client.post("/admin/login", data={"csrf": csrf, "password": PASSWORD})
    return client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=12)
    args = parser.parse_args()
    import os

    from hookline.dashboard.auth import hash_password

    os.environ["HOOKLINE_DASHBOARD_PASSWORD_HASH"] = hash_password(PASSWORD)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        server.start()
        reader = signed_in(server)
        server.run(server.one_call)  # warm-up: the first call's answer takes a message
        results = {}
        # closed: nobody looks; refreshing: one open Today page (its JSON every 2 s, the
        # shortest refresh the config allows) plus a call list and a call page now and
        # then; hammered: 4 clients fetching pages back to back, as fast as they can.
        for mode, clients, pause in (("closed", 0, 0.0), ("refreshing", 1, 2.0),
                                     ("hammered", 4, 0.0)):  # fmt: skip
            stop = threading.Event()
            requests = [0]

            def hammer(
                stop: threading.Event = stop, requests: list[int] = requests, pause: float = pause
            ) -> None:
                c = signed_in(server)
                try:
                    while not stop.is_set():
                        for path in ("/admin/api/today", "/admin/calls", "/admin/api/trends"):
                            assert c.get(path).status_code == 200
                            requests[0] += 1
                        stop.wait(pause)
                finally:
                    c.close()

            hammers = [threading.Thread(target=hammer) for _ in range(clients)]
            for h in hammers:
                h.start()
            ids = [server.run(server.one_call) for _ in range(args.calls)]
            stop.set()
            for h in hammers:
                h.join()
            values = sorted(v2v(server, reader, i) for i in ids)
            results[mode] = {
                "p50_ms": round(statistics.median(values), 1),
                "max_ms": round(values[-1], 1),
                "dashboard_requests": requests[0],
            }
        server.stop()
    print(msgspec.json.encode({"calls_each": args.calls, **results}).decode())


if __name__ == "__main__":
    main()
