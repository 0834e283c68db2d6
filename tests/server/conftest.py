"""A real server: the Twilio provider plus the scripted STT/LLM/TTS, on loopback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import hookline_telephony_twilio
from hookline.config import Secrets
from hookline.events import CallEvent, CallRecord
from hookline.hookspecs import hookimpl
from hookline.runtime import Runtime
from hookline.testing.harness import make_config, scripted_plugins
from hookline.testing.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS
from hookline_testkit.fixtures_twilio import (  # noqa: F401 (fixtures)
    twilio_auth_token,
    twilio_rest,
    twilio_secrets,
    twilio_sim,
)
from hookline_testkit.stack import FakeStack
from hookline_testkit.twilio_sim import TwilioRestFake


class Recorder:
    """An observer plugin keeping every call's events and final record."""

    def __init__(self) -> None:
        self.events: list[tuple[str, CallEvent]] = []
        self.started: list[str] = []
        self.ended: list[CallRecord] = []
        self.changed = trio.Event()
        self.on_start: Callable[[str], None] | None = None  # e.g. tell the STT what comes

    @hookimpl
    def hookline_call_started(self, call, started):
        self.started.append(call.call_id)
        if self.on_start is not None:
            self.on_start(call.call_id)
        self._poke()

    @hookimpl
    def hookline_call_event(self, call, event):
        self.events.append((call.call_id, event))
        self._poke()

    @hookimpl
    def hookline_call_ended(self, call, record):
        self.ended.append(record)
        self._poke()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate) -> None:
        while not predicate():
            await self.changed.wait()

    def of(self, kind) -> list:
        return [e for _, e in self.events if isinstance(e, kind)]


@dataclass
class Stack:
    runtime: Runtime
    recorder: Recorder
    stt: ScriptedSTT
    llm: ScriptedLLM
    tts: ScriptedTTS
    rest: TwilioRestFake

    def runtime_config(self) -> Any:
        return self.runtime.config


@pytest.fixture
async def stack(twilio_rest: TwilioRestFake, twilio_secrets: dict[str, str]):  # noqa: F811
    """`s = await stack(replies=[...], **config sections)`: a started Runtime, not served."""

    async def build(replies=(), *, tts: ScriptedTTS | None = None, **sections: Any) -> Stack:
        twilio = {"api_base_url": twilio_rest.url, **sections.pop("twilio", {})}
        config = make_config(
            providers={"telephony": "twilio"},
            telephony={"twilio": twilio},
            **sections,
        )
        recorder = Recorder()
        stt, llm = ScriptedSTT(), ScriptedLLM(list(replies))
        tts = tts or ScriptedTTS(ttfb_s=0.01, chars_per_s=40.0)
        plugins = scripted_plugins([hookline_telephony_twilio, recorder])
        runtime = Runtime(
            config,
            plugins,
            secrets=Secrets(twilio_secrets),
            providers={"stt": stt, "llm": llm, "tts": tts},
        )
        await runtime.start()
        return Stack(runtime, recorder, stt, llm, tts, twilio_rest)

    return build


@pytest.fixture
def fake_stack(
    fake_deepgram_stt,
    fake_deepgram_tts,
    openai_fake,
    twilio_rest: TwilioRestFake,  # noqa: F811 (the fixture imported above, by name)
    twilio_auth_token: str,  # noqa: F811
) -> FakeStack:
    """The real plugins' far ends, faked on loopback, for `hookline serve` subprocesses."""
    return FakeStack(
        stt=fake_deepgram_stt,
        tts=fake_deepgram_tts,
        llm=openai_fake,
        rest=twilio_rest,
        auth_token=twilio_auth_token,
    )
