"""The Deepgram STT plugin against the loopback fake: results, turn ends, reconnects, errors.

Audio is sent faster than real time: the fake runs on the audio clock, so every
timestamp below is exact (20 ms frames) and nothing depends on the machine's speed.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections.abc import Callable, Sequence

import msgspec
import pytest
import trio
import trio.lowlevel
import trio.testing

from hookline.audio import MULAW_8K, frames, mulaw_silence, tone_mulaw
from hookline.config import Config, decode_section
from hookline.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderProtocolError,
    ProviderUnavailable,
)
from hookline.providers import (
    STT,
    CallInfo,
    SpeechStarted,
    STTEvent,
    STTStream,
    Transcript,
    UtteranceEnd,
)
from hookline_stt_deepgram import DeepgramSTT, DeepgramSTTSettings, DeepgramSTTStream
from hookline_testkit.fake_deepgram_stt import FakeDeepgramSTT, fake_deepgram_stt
from hookline_testkit.tls_probe import serve_tls_sink

Until = Callable[[list[STTEvent]], bool]


def utterance_end(events: list[STTEvent]) -> bool:
    return isinstance(events[-1], UtteranceEnd)


def stt_for(fake: FakeDeepgramSTT, **settings: object) -> DeepgramSTT:
    return DeepgramSTT(DeepgramSTTSettings(url=fake.url, **settings), api_key=fake.api_key)  # type: ignore[arg-type]


async def send_audio(stream: STTStream, audio: bytes) -> None:
    for frame in frames(audio):
        await stream.send(frame)
        await trio.lowlevel.checkpoint()


async def transcribe(
    stream: STTStream, audio: bytes, until: Until = utterance_end, limit_s: float = 10
) -> list[STTEvent]:
    """Send `audio` while collecting events until `until(events)` holds."""
    events: list[STTEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_audio, stream, audio)
        with trio.fail_after(limit_s):
            async for event in stream:
                events.append(event)
                if until(events):
                    break
        nursery.cancel_scope.cancel()
    return events


def finals(events: Sequence[STTEvent]) -> list[Transcript]:
    return [e for e in events if isinstance(e, Transcript) and e.is_final]


def speech(seconds: float) -> bytes:
    return tone_mulaw(seconds)


def silence(seconds: float) -> bytes:
    return mulaw_silence(seconds)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time for the idle-timeout tests; loopback I/O stays real."""
    return trio.testing.MockClock(autojump_threshold=0.01)


@pytest.fixture
async def fake():
    async with fake_deepgram_stt() as fake:
        yield fake


async def test_transcripts_and_turn_end_in_call_audio_time(fake: FakeDeepgramSTT) -> None:
    fake.script("call-1", ["Book an oil change for Tuesday."])
    stt = stt_for(fake)
    assert isinstance(stt, STT)
    audio = silence(0.5) + speech(0.8) + silence(1.5)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-1")) as stream:
        assert isinstance(stream, STTStream)
        events = await transcribe(stream, audio)

    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "UtteranceEnd"
    assert events[0] == SpeechStarted(at=0.5)
    interims = [e for e in events if isinstance(e, Transcript) and not e.is_final]
    assert interims, kinds
    assert all("Book an oil change for Tuesday.".startswith(e.text) for e in interims)
    assert all(e.start == 0.5 and e.end <= 1.3 for e in interims)
    [final] = finals(events)
    assert final.text == "Book an oil change for Tuesday."
    assert final.speech_final
    assert (final.start, final.end) == (0.5, 1.3)
    assert events[-1] == UtteranceEnd(last_word_end=1.3)

    [conn] = fake.connections
    assert conn.headers["authorization"] == f"Token {fake.api_key}"
    assert conn.call_id == "call-1"
    expected = {
        "model": "nova-2-phonecall", "encoding": "mulaw", "sample_rate": "8000",
        "channels": "1", "interim_results": "true", "endpointing": "300",
        "utterance_end_ms": "1000", "vad_events": "true", "smart_format": "true",
        "language": "en-US", "tag": "hookline",
    }  # fmt: skip
    assert {name: conn.param(name) for name in expected} == expected
    # Leaving the block closed the stream the polite way.
    assert conn.controls[-1] == "CloseStream"
    assert conn.close_code == 1000
    assert conn.empty_frames == 0


async def test_keyterms_keywords_and_disabled_endpointing_reach_the_server(
    fake: FakeDeepgramSTT,
) -> None:
    stt = stt_for(
        fake,
        model="nova-3",
        keyterms=["oil change", "brake pads"],
        keywords=["Riverside:2"],
        endpointing_ms=None,
        utterance_end_ms=None,
        vad_events=False,
    )
    async with stt.open(MULAW_8K, CallInfo(call_id="c2")):
        pass
    [conn] = fake.connections
    assert conn.params["keyterm"] == ["oil change", "brake pads"]
    assert conn.params["keywords"] == ["Riverside:2"]
    assert conn.param("endpointing") == "false"
    assert conn.param("utterance_end_ms") is None
    assert conn.param("model") == "nova-3"


async def test_reconnect_mid_utterance_keeps_the_utterance_and_its_times(
    fake: FakeDeepgramSTT,
) -> None:
    fake.script("call-r", ["First thing.", "Second thing here, please."])
    # Drop the connection (no close frame) just after the first interim of utterance 2.
    fake.drop_next(at_utterance=2)
    stt = stt_for(fake)
    audio = silence(0.4) + speech(0.6) + silence(1.2) + speech(1.0) + silence(1.5)

    def two_turns(events: list[STTEvent]) -> bool:
        return sum(isinstance(e, UtteranceEnd) for e in events) == 2

    async with stt.open(MULAW_8K, CallInfo(call_id="call-r")) as stream:
        assert isinstance(stream, DeepgramSTTStream)
        events = await transcribe(stream, audio, until=two_turns)
        assert stream.reconnects == 1

    first, second = finals(events)
    assert (first.text, first.start, first.end) == ("First thing.", 0.4, 1.0)
    assert second.text == "Second thing here, please."
    assert second.speech_final
    # The new connection's clock starts at the replay point; times are still call audio.
    assert (second.start, second.end) == (2.2, 3.2)
    assert [e.at for e in events if isinstance(e, SpeechStarted)] == [0.4, 2.2]
    assert [e.last_word_end for e in events if isinstance(e, UtteranceEnd)] == [1.0, 3.2]

    one, two = fake.connections
    assert one.dropped and one.close_code == 1006
    # The replay starts where the first final ended (1.3 s) and loses nothing after it.
    # (Collecting stopped at the second UtteranceEnd, 4.2 s, so the tail may be unsent.)
    replay_from = int(1.3 * 8000)
    assert len(two.audio) >= int((4.2 - 1.3) * 8000)
    assert bytes(two.audio) == audio[replay_from : replay_from + len(two.audio)]
    assert fake.finals("call-r") == ["First thing.", "Second thing here, please."]


async def test_server_close_mid_call_reconnects(fake: FakeDeepgramSTT) -> None:
    fake.script("call-c", ["Hello there."])
    fake.drop_next(after_audio_s=0.3, how="close")  # 1011 NET-0000 before the speech
    stt = stt_for(fake)
    audio = silence(0.6) + speech(0.5) + silence(1.4)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-c")) as stream:
        events = await transcribe(stream, audio)
    [final] = finals(events)
    assert (final.text, final.start, final.end) == ("Hello there.", 0.6, 1.1)
    assert fake.connections[0].close_code == 1011
    assert fake.connections[0].close_reason == "NET-0000"
    assert len(fake.connections) == 2


async def test_drop_after_wall_time_mid_speech_at_real_time_pace(clock) -> None:
    # Frames paced at 20 ms of (virtual) time, like a phone call; the drop lands mid-speech.
    async with fake_deepgram_stt() as fake:
        fake.script("call-w", ["Is my car ready?"])
        fake.drop_next(after_s=0.8)
        stt = stt_for(fake)
        audio = silence(0.6) + speech(0.5) + silence(1.4)

        async def paced(stream: STTStream) -> None:
            for frame in frames(audio):
                await stream.send(frame)
                await trio.sleep(0.02)

        events: list[STTEvent] = []
        async with stt.open(MULAW_8K, CallInfo(call_id="call-w")) as stream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(paced, stream)
                with trio.fail_after(10):
                    async for event in stream:
                        events.append(event)
                        if isinstance(event, UtteranceEnd):
                            break
    one, _ = fake.connections
    assert one.dropped and 0.6 < one.audio_seconds < 1.1  # it really dropped mid-speech
    [final] = finals(events)
    assert (final.text, final.start, final.end) == ("Is my car ready?", 0.6, 1.1)
    assert [e.at for e in events if isinstance(e, SpeechStarted)] == [0.6]


async def test_outage_beyond_the_bound_raises_provider_unavailable(clock) -> None:
    async with fake_deepgram_stt() as fake:
        fake.drop_next(after_audio_s=0.2)
        stt = stt_for(fake, reconnect_timeout_s=3.0)
        async with stt.open(MULAW_8K, CallInfo(call_id="call-u")) as stream:
            fake.fail_next(count=1000, status=503)  # every reconnect attempt is refused
            await send_audio(stream, silence(0.5))
            await fake.wait_until(lambda: fake.connections[0].dropped)
            dropped_at = trio.current_time()
            with pytest.raises(ProviderUnavailable) as info, trio.fail_after(10):
                async for _ in stream:
                    pass
            failed_after = trio.current_time() - dropped_at
            await stream.send(silence(0.1))  # the engine may still push audio: no error
    assert "503" in str(info.value) and "within 3 s" in str(info.value)
    assert info.value.provider == "stt/deepgram"
    # On the virtual clock: it retried with backoff and gave up within the bound.
    assert 2.0 <= failed_after <= 3.0
    assert len(fake.connections) >= 4


async def test_auth_failure_at_open_names_the_env_var(fake: FakeDeepgramSTT) -> None:
    stt = DeepgramSTT(
        DeepgramSTTSettings(url=fake.url, api_key_env="SHOP_DEEPGRAM_KEY"), api_key="wrong"
    )
    with pytest.raises(ProviderAuthError) as info:
        async with stt.open(MULAW_8K, CallInfo(call_id="call-a")):
            pytest.fail("open() must not succeed with a bad key")
    message = str(info.value)
    assert "SHOP_DEEPGRAM_KEY" in message
    assert "401" in message and "INVALID_AUTH" in message
    [conn] = fake.connections
    assert conn.rejected == 401


async def test_refused_parameters_are_a_protocol_error(fake: FakeDeepgramSTT) -> None:
    stt = stt_for(fake, utterance_end_ms=500)
    with pytest.raises(ProviderProtocolError, match="utterance_end_ms must be at least 1000"):
        async with stt.open(MULAW_8K, CallInfo(call_id="call-p")):
            pass


async def test_unreachable_server_is_unavailable_at_open() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stt = DeepgramSTT(
        DeepgramSTTSettings(url=f"ws://127.0.0.1:{port}/v1/listen", reconnect_timeout_s=0.2),
        api_key="k",
    )
    with pytest.raises(ProviderUnavailable, match="could not connect"):
        async with stt.open(MULAW_8K, CallInfo(call_id="call-x")):
            pass


async def test_keepalive_holds_an_idle_stream_past_the_idle_timeout(clock) -> None:
    # Deepgram's real timings (idle close after 10 s, KeepAlive every 4 s) on a virtual clock.
    async with fake_deepgram_stt(idle_timeout_s=10.0) as fake:
        fake.script("call-k", ["Still here."])
        stt = stt_for(fake, keepalive_s=4.0)
        async with stt.open(MULAW_8K, CallInfo(call_id="call-k")) as stream:
            await send_audio(stream, silence(0.2))
            quiet_from = trio.current_time()
            await trio.sleep(35)  # three and a half idle timeouts without audio
            events = await transcribe(stream, speech(0.5) + silence(1.4))
            assert stream.reconnects == 0
        [conn] = fake.connections
        times = [quiet_from] + [
            t
            for t, kind in zip(conn.control_times, conn.controls, strict=True)
            if kind == "KeepAlive"
        ]
        assert len(times) >= 9
        assert max(b - a for a, b in itertools.pairwise(times)) < 4.1
        [final] = finals(events)
        assert (final.text, final.start, final.end) == ("Still here.", 0.2, 0.7)


async def test_without_keepalive_the_idle_close_is_survived_by_reconnecting(clock) -> None:
    async with fake_deepgram_stt(idle_timeout_s=10.0) as fake:
        fake.script("call-i", ["Back again."])
        stt = stt_for(fake, keepalive_s=60)
        async with stt.open(MULAW_8K, CallInfo(call_id="call-i")) as stream:
            await send_audio(stream, silence(0.2))
            await fake.wait_until(lambda: fake.connections[0].closed.is_set(), limit_s=15)
            events = await transcribe(stream, speech(0.5) + silence(1.4))
        first = fake.connections[0]
        assert (first.close_code, first.close_reason) == (1011, "NET-0001")
        assert len(fake.connections) == 2
        [final] = finals(events)
        assert (final.text, final.start, final.end) == ("Back again.", 0.2, 0.7)


async def test_malformed_and_unknown_messages_are_ignored_with_a_log_line(
    fake: FakeDeepgramSTT, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script("call-m", ["Okay then."])
    fake.on_open_raw = [
        "{not json",
        '{"type":"Mystery","detail":1}',
        '{"type":"Results","start":"soon"}',
    ]
    stt = stt_for(fake)
    with caplog.at_level(logging.WARNING, logger="hookline.stt.deepgram"):
        async with stt.open(MULAW_8K, CallInfo(call_id="call-m")) as stream:
            events = await transcribe(stream, speech(0.5) + silence(1.4))
            assert stream.ignored_messages == 3
    [final] = finals(events)
    assert final.text == "Okay then."
    records = [r for r in caplog.records if "ignored" in r.getMessage()]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 3
    assert all(r.call_id == "call-m" for r in records)  # shown once, by the formatter
    assert "unknown message type 'Mystery'" in lines[1]
    assert "malformed Results" in lines[2]


async def test_finalize_flushes_the_utterance_before_endpointing(fake: FakeDeepgramSTT) -> None:
    fake.script("call-f", ["Cancel my appointment."])
    stt = stt_for(fake)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-f")) as stream:
        await send_audio(stream, silence(0.3) + speech(0.6))  # no trailing silence
        await stream.finalize()
        with trio.fail_after(5):
            final = None
            async for event in stream:
                if isinstance(event, Transcript) and event.is_final:
                    final = event
                    break
    assert final is not None
    assert final.text == "Cancel my appointment."
    assert not final.speech_final
    assert (final.start, final.end) == (0.3, 0.9)
    [conn] = fake.connections
    assert conn.controls[0] == "Finalize"
    # Finalize went after all the audio sent before it.
    assert conn.audio_seconds == pytest.approx(0.9)


async def test_send_chunk_ms_gathers_frames_and_finalize_sends_the_rest(
    fake: FakeDeepgramSTT,
) -> None:
    """With `send_chunk_ms = 60` three 20 ms frames go out as one message (fewer sends
    per call); Finalize still comes after every byte, and the transcript is unchanged."""
    fake.script("call-g", ["Cancel my appointment."])
    stt = stt_for(fake, send_chunk_ms=60)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-g")) as stream:
        await send_audio(stream, silence(0.3) + speech(0.62))  # 46 frames: 15 x 3 + 1
        await stream.finalize()
        with trio.fail_after(5):
            final = None
            async for event in stream:
                if isinstance(event, Transcript) and event.is_final:
                    final = event
                    break
    assert final is not None
    assert final.text == "Cancel my appointment."
    assert (final.start, final.end) == (0.3, 0.92)
    [conn] = fake.connections
    assert conn.controls[0] == "Finalize"
    assert conn.audio_seconds == pytest.approx(0.92)
    # Every message but the one Finalize flushed carries at least 60 ms (480 bytes).
    assert all(size >= 480 for size in conn.audio_messages[:-1]), conn.audio_messages
    assert len(conn.audio_messages) <= 16


async def test_by_default_one_frame_goes_out_without_waiting_for_more(
    fake: FakeDeepgramSTT,
) -> None:
    stt = stt_for(fake)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-h")) as stream:
        await stream.send(silence(0.02))
        await fake.wait_until(lambda: bool(fake.connections[0].audio_messages))
    assert fake.connections[0].audio_messages == [160]


async def test_less_than_a_chunk_waits_for_the_next_frame(fake: FakeDeepgramSTT) -> None:
    stt = stt_for(fake, send_chunk_ms=40)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-i")) as stream:
        await stream.send(silence(0.02))
        await trio.sleep(0.2)
        assert fake.connections[0].audio_messages == []
        await stream.send(silence(0.02))
        await fake.wait_until(lambda: bool(fake.connections[0].audio_messages))
    assert fake.connections[0].audio_messages == [320]


async def test_slow_finals_still_arrive_in_order(fake: FakeDeepgramSTT) -> None:
    fake.script("call-s", ["One.", "Two."])
    fake.final_delay_s = 0.2
    stt = stt_for(fake)
    audio = speech(0.4) + silence(0.5) + speech(0.4) + silence(1.4)

    def second_final(events: list[STTEvent]) -> bool:
        return len(finals(events)) == 2

    async with stt.open(MULAW_8K, CallInfo(call_id="call-s")) as stream:
        events = await transcribe(stream, audio, until=second_final)
    assert [f.text for f in finals(events)] == ["One.", "Two."]
    assert [(f.start, f.end) for f in finals(events)] == [(0.0, 0.4), (0.9, 1.3)]


def test_bad_settings_are_config_errors_naming_the_key() -> None:
    config = msgspec.convert(
        {"agent": {}, "providers": {"telephony": "t", "stt": "deepgram", "llm": "l", "tts": "t"}},
        Config,
    )
    with pytest.raises(ConfigError, match=r"stt\.deepgram.*encoding 'opus' is not supported"):
        decode_section(config, "stt.deepgram", {"encoding": "opus"}, DeepgramSTTSettings)
    with pytest.raises(ConfigError, match=r"stt\.deepgram\.modle"):
        decode_section(config, "stt.deepgram", {"modle": "nova-3"}, DeepgramSTTSettings)
    settings = decode_section(config, "stt.deepgram", {"endpointing_ms": 500}, DeepgramSTTSettings)
    assert settings.endpointing_ms == 500 and settings.model == "nova-2-phonecall"


def test_the_plugin_offers_the_deepgram_stt_provider() -> None:
    from importlib.metadata import entry_points

    from hookline.plugins import discover

    ours = [ep for ep in entry_points(group="hookline") if ep.value == "hookline_stt_deepgram"]
    spec = discover(ours).provider("stt", "deepgram")
    assert spec is not None
    assert spec.settings is DeepgramSTTSettings


async def test_key_refused_on_reconnect_is_an_auth_error_from_iteration(
    fake: FakeDeepgramSTT,
) -> None:
    fake.drop_next(after_audio_s=0.2)
    stt = stt_for(fake)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-k2")) as stream:
        fake.reject_auth = True  # the key was revoked mid-call
        await send_audio(stream, silence(0.5))
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"), trio.fail_after(5):
            async for _ in stream:
                pass
    assert [c.rejected for c in fake.connections] == [None, 401]


async def test_reconnects_per_call_are_bounded(fake: FakeDeepgramSTT) -> None:
    fake.drop_next(after_audio_s=0.2)
    fake.drop_next(after_audio_s=0.2)
    stt = stt_for(fake, max_reconnects=1)
    async with stt.open(MULAW_8K, CallInfo(call_id="call-b")) as stream:
        await send_audio(stream, silence(1.0))
        with pytest.raises(ProviderUnavailable, match="1 reconnects"), trio.fail_after(5):
            async for _ in stream:
                pass
    assert len(fake.connections) == 2


async def test_wss_connections_share_one_tls_context_built_off_the_trio_thread(
    tls_context_builds: list[int],
) -> None:
    # Building a TLS context loads the CA bundle (~25 ms of CPU): done on the trio thread
    # at each connect, it stalls every call in flight whenever a call starts.
    built_on = tls_context_builds
    hellos: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tls_sink, hellos)
        stt = DeepgramSTT(
            DeepgramSTTSettings(
                url=f"wss://127.0.0.1:{port}/v1/listen",
                connect_timeout_s=0.3,
                reconnect_timeout_s=0.3,
            ),
            api_key="k",
        )
        await stt.prepare()
        for call_id in ("call-t1", "call-t2"):
            with pytest.raises(ProviderUnavailable, match="could not connect"):
                async with stt.open(MULAW_8K, CallInfo(call_id=call_id)):
                    pass
        nursery.cancel_scope.cancel()
    assert len(hellos) >= 2 and all(h[:1] == b"\x16" for h in hellos)  # TLS handshakes
    assert len(built_on) == 1  # once, in prepare(): not per connection
    assert threading.get_ident() not in built_on  # and not on the trio thread
