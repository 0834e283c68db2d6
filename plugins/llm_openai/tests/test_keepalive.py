"""The client keeps its connection across a call's turns: no new TCP (and TLS) handshake
before each answer on a quiet line."""

from __future__ import annotations

import threading
from functools import partial

import openai
import trio
from llm_openai_helpers import collect, make_llm, text_of

from hookline_llm_openai import OpenAILLM
from hookline_testkit.fake_openai import FakeOpenAI, text

# Within a call, the caller speaks and the answer plays between two requests: seconds
# apart, longer than the HTTP stack's 5 s default keep-alive. The pool's expiry runs on
# time.monotonic, so the wait is real (the only real wait in these tests).
TURN_GAP_S = 6.0


async def test_turns_seconds_apart_share_one_connection(openai_fake: FakeOpenAI) -> None:
    openai_fake.script(text("Monday at ten works."), text("Booked. See you then."))
    llm = make_llm(openai_fake)
    await llm.prepare()
    try:
        first = await collect(llm)
        await trio.sleep(TURN_GAP_S)
        second = await collect(llm)
    finally:
        await llm.aclose()
    assert (text_of(first), text_of(second)) == ("Monday at ten works.", "Booked. See you then.")
    assert openai_fake.connections == 1


class _RecordingLLM(OpenAILLM):
    built_on: list[int]

    def _new_client(self) -> openai.AsyncOpenAI:
        self.built_on = [*getattr(self, "built_on", []), threading.get_ident()]
        return super()._new_client()


async def test_prepare_builds_the_client_and_its_pool_off_the_trio_thread(
    openai_fake: FakeOpenAI,
) -> None:
    shaped = make_llm(openai_fake)
    llm = _RecordingLLM(shaped.settings, api_key=openai_fake.api_key, first_token_timeout_s=2.0)
    await llm.prepare()
    try:
        assert len(llm.built_on) == 1 and llm.built_on[0] != threading.get_ident()
        await collect(llm)
        assert len(llm.built_on) == 1  # the prepared client served the response
        # Our own timeout still goes with every request, not the SDK's 10 minutes.
        assert llm.client.timeout == llm.settings.total_timeout_s + 5.0
    finally:
        await llm.aclose()


async def test_aclose_closes_the_client_and_its_pool(openai_fake: FakeOpenAI) -> None:
    llm = make_llm(openai_fake)
    await llm.prepare()
    await collect(llm)
    client = llm.client
    await llm.aclose()
    assert client.is_closed()


async def _hang_up_once(fake: FakeOpenAI, hung_up: list[int], stream: trio.SocketStream) -> None:
    """The first connection reads a whole request and closes without answering (what a
    server's idle close racing our request looks like to the client); the rest are the
    fake's."""
    if hung_up:
        await fake.serve(stream)
        return
    hung_up.append(1)
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += await stream.receive_some(65536)
    await stream.aclose()


async def test_a_close_racing_a_request_is_retried(caplog) -> None:
    fake = FakeOpenAI()
    fake.script(text("Hello again."))
    hung_up: list[int] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_hang_up_once, fake, hung_up), 0, host="127.0.0.1")
        )
        fake.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
        llm = make_llm(fake, max_retry_wait_s=3.0)
        try:
            events = await collect(llm)
        finally:
            await llm.aclose()
        nursery.cancel_scope.cancel()
    assert hung_up and text_of(events) == "Hello again."
    assert len(fake.chats) == 1  # the fake saw only the retry
    retried = [r.getMessage() for r in caplog.records if "retry 1" in r.getMessage()]
    assert len(retried) == 1 and "cannot reach the server" in retried[0]
