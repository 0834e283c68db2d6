"""The webhook path against a real HTTP server on loopback: the shop's server checks the
signature the way its docs say, refuses a wrong one, and a slow server is cut off."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from hookline import ToolError
from hookline.logs import call_log
from hookline.testing.scripted import call_info
from hookline.tools import ToolContext
from hookline_knowledge import SIGNATURE_HEADER, TIMESTAMP_HEADER, KnowledgeSettings
from hookline_knowledge.answers import webhook_tool
from hookline_knowledge.webhook import WebhookKnowledge

SECRET = "shop-webhook-secret"


@dataclass
class ShopWebhook:
    """The shop's side, written from the header documentation alone."""

    answers: dict[str, str | None]
    delay_s: float = 0.0
    status: int = 200
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0

    def verified(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
        given = headers.get(SIGNATURE_HEADER.lower(), "")
        return hmac.compare_digest(given, "sha256=" + expected.hexdigest())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if not self.verified(headers, body):
            self.refused += 1
            await self._reply(send, 401, b'{"error": "bad signature"}')
            return
        question = msgspec.json.decode(body)
        self.received.append(question)
        await trio.sleep(self.delay_s)
        answer = self.answers.get(question["question"])
        await self._reply(send, self.status, msgspec.json.encode({"answer": answer}))

    async def _reply(self, send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def shop_webhook(**options: Any) -> AsyncIterator[ShopWebhook]:
    app = ShopWebhook(**options)
    config = HyperConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    config.graceful_timeout = 0.1
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app, config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        )
        app.url = binds[0].rstrip("/") + "/knowledge"
        try:
            yield app
        finally:
            shutdown.set()
            nursery.cancel_scope.cancel()


def ctx() -> ToolContext:
    return ToolContext(
        call=call_info(call_id="call-knowledge"),
        control=None,
        logger=call_log("test", "c1"),
        tool_call_id="t1",
    )  # type: ignore[arg-type]


@asynccontextmanager
async def ask_tool(url: str, secret: str = SECRET, timeout_s: float = 10.0) -> AsyncIterator[Any]:
    settings = KnowledgeSettings(webhook_url=url, timeout_s=timeout_s)
    webhook = WebhookKnowledge(url, secret, timeout_s=timeout_s, max_chars=200)
    yield webhook_tool(webhook, settings)


async def ask(answer_question: Any, question: str) -> Any:
    params = answer_question.decode(msgspec.json.encode({"question": question}).decode())
    return await answer_question.handler(params, ctx())


async def test_a_signed_question_gets_the_shops_answer() -> None:
    answers = {"do you take Amex": "Yes, we take American Express."}
    async with shop_webhook(answers=answers) as shop, ask_tool(shop.url) as answer_question:
        result = await ask(answer_question, "do you take Amex")
    assert result["found"] is True and result["answer"] == "Yes, we take American Express."
    assert shop.refused == 0
    assert shop.received == [{"question": "do you take Amex", "call_id": "call-knowledge"}]


async def test_the_shop_not_knowing_is_said_and_a_message_offered() -> None:
    async with shop_webhook(answers={}) as shop, ask_tool(shop.url) as answer_question:
        result = await ask(answer_question, "do you sell pizza")
    assert result["found"] is False and "take a message" in result["instructions"]


async def test_a_long_answer_is_clipped() -> None:
    answers = {"tell me everything": "word " * 1000}
    async with shop_webhook(answers=answers) as shop, ask_tool(shop.url) as answer_question:
        result = await ask(answer_question, "tell me everything")
    assert 0 < len(result["answer"]) <= 200


async def test_a_wrong_secret_is_refused_by_the_shop_and_is_a_tool_error() -> None:
    async with shop_webhook(answers={"q": "a"}) as shop:
        async with ask_tool(shop.url, secret="not-the-secret") as answer_question:
            with pytest.raises(ToolError, match="cannot be looked up right now"):
                await ask(answer_question, "q")
    assert shop.refused == 1 and shop.received == []


async def test_a_slow_shop_is_cut_off_with_a_clear_tool_error() -> None:
    async with shop_webhook(answers={"q": "a"}, delay_s=60) as shop:
        async with ask_tool(shop.url, timeout_s=0.5) as answer_question:
            with trio.fail_after(30):  # generous: the machine is shared; the bound is 0.5 s
                with pytest.raises(ToolError, match="take a message"):
                    await ask(answer_question, "q")
    assert len(shop.received) == 1


async def test_an_error_status_or_a_dead_server_is_a_tool_error() -> None:
    async with shop_webhook(answers={"q": "a"}, status=500) as shop:
        async with ask_tool(shop.url) as answer_question:
            with pytest.raises(ToolError):
                await ask(answer_question, "q")
    # The server is gone: nothing listens on its port any more.
    async with ask_tool(shop.url) as answer_question:
        with pytest.raises(ToolError):
            await ask(answer_question, "q")


def test_the_webhook_needs_a_url_and_a_secret_variable() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        KnowledgeSettings()
    with pytest.raises(ValueError, match="exactly one"):
        KnowledgeSettings(file="k.md", webhook_url="https://shop.example/kb")
    with pytest.raises(ValueError, match="not an http"):
        KnowledgeSettings(webhook_url="shop.example/kb")
    assert KnowledgeSettings(webhook_url="https://x/kb").webhook_secret_env
    assert KnowledgeSettings(file="k.md").webhook_secret_env == ""  # check asks for no secret


def test_check_asks_for_the_webhook_secret(tmp_path, capsys, monkeypatch):
    from hookline.cli import main

    monkeypatch.delenv("KNOWLEDGE_WEBHOOK_SECRET", raising=False)
    path = tmp_path / "agent.toml"
    path.write_text(
        '[agent]\nname = "Shop"\ninstructions = "Help."\ngreeting = "Hi."\n'
        '[providers]\ntelephony = "twilio"\nstt = "deepgram"\nllm = "openai"\n'
        'tts = "deepgram"\ntools = ["knowledge"]\n'
        '[telephony.twilio]\npublic_url = "https://agent.example.com"\n'
        "[analytics]\nenabled = false\n"
        '[tools.knowledge]\nwebhook_url = "https://shop.example.com/kb"\n'
    )
    for env in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(env, "x")
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "missing secret" in out and "tools.knowledge.webhook_secret_env" in out
    assert "KNOWLEDGE_WEBHOOK_SECRET" in out


async def test_the_runtime_builds_the_webhook_tool_with_the_secret_from_the_environment():
    from hookline.config import Secrets
    from hookline.runtime import Runtime
    from hookline.testing.harness import make_config, scripted_plugins
    from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS

    async with shop_webhook(answers={"do you take Amex": "We do."}) as shop:
        config = make_config(
            providers={"tools": ["builtin", "knowledge"]},
            tools={"knowledge": {"webhook_url": shop.url, "webhook_secret_env": "KB_SECRET"}},
        )
        runtime = Runtime(
            config,
            scripted_plugins(installed=True),
            secrets=Secrets({"KB_SECRET": SECRET}),
            providers={"telephony": object(), "stt": ScriptedSTT(), "llm": ScriptedLLM(),
                       "tts": ScriptedTTS()},
        )  # fmt: skip
        result = await ask(runtime.tools["answer_question"], "do you take Amex")
    assert result == {"found": True, "answer": "We do.", "instructions": result["instructions"]}
    assert shop.refused == 0
