"""A shop's webhook receiver on loopback, verifying with the snippet docs/notifications.md
tells receivers to copy (read from the doc itself, so the doc cannot rot)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookline.providers import Route
from hookline.server import asgi_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
PATH = "/hooks/hookline"


def doc_verifier_class() -> type:
    """`WebhookVerifier` exactly as the doc's ```python receiver block defines it."""
    block = re.search(r"```python receiver\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/notifications.md lost its receiver snippet"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)
    return namespace["WebhookVerifier"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verdict: str
    status: int


@dataclass
class Receiver:
    secret: str
    down: bool = False  # answer 503 to everything (the shop's system is down)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.verifier = doc_verifier_class()(self.secret)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    def app(self) -> Any:
        async def hook(scope: dict, receive: Any, send: Any) -> None:
            body = b""
            while True:
                event = await receive()
                body += event.get("body", b"")
                if not event.get("more_body"):
                    break
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if self.down:
                verdict, status = "down", 503
            else:
                verdict = self.verifier.verify(headers, body)
                status = {"ok": 200, "replay": 409}.get(verdict, 401)
            self.received.append(Received(headers, body, verdict, status))
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})

        return asgi_app([Route(PATH, hook)])
