"""The streaming /v1/speak client against the loopback fake."""

from __future__ import annotations

import logging
import threading

import pytest
import trio
import trio.testing
from tts_deepgram_helpers import (
    CALL,
    audio_between_flushes,
    collect_until,
    flushed_sequences,
    make_tts,
)

from hookline.audio import MULAW_8K, AudioFormat
from hookline.errors import ProviderAuthError, ProviderError, ProviderUnavailable
from hookline.providers import TTS, AudioChunk, CallInfo, Flushed, TTSStream
from hookline_testkit.fake_deepgram_tts import FakeDeepgramTTS
from hookline_testkit.tls_probe import serve_tls_sink

LONG_ANSWER = "This is a long answer that the caller is going to interrupt. " * 4


async def _interrupt_a_long_answer(fake: FakeDeepgramTTS, stream: TTSStream) -> list:
    """A barge-in: LONG_ANSWER is flushed and its audio is under way (20 ms chunks, 10 ms
    apart) when the caller interrupts: clear(), then "Okay." is flushed. Returns the
    events up to the second Flushed."""
    fake.chunk_bytes = 160
    fake.chunk_interval_s = 0.01
    await stream.speak(LONG_ANSWER)
    await stream.flush()
    got = 0
    async for event in stream:
        assert isinstance(event, AudioChunk)
        got += len(event.audio)
        if got >= 800:
            break
    await stream.clear()
    await stream.speak("Okay.")
    await stream.flush()
    with trio.fail_after(10):
        return await collect_until(stream, 2)


async def test_speak_flush_gives_audio_of_the_text_then_flushed_in_order(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake)
    assert isinstance(tts, TTS)
    async with tts.open(MULAW_8K, CALL) as stream:
        assert isinstance(stream, TTSStream)
        await stream.speak("Sure, I can help ")
        await stream.speak("with that.")
        await stream.flush()
        await stream.speak("What day works for you?")
        await stream.flush()
        events = await collect_until(stream, 2)
    assert flushed_sequences(events) == [1, 2]
    first, second = audio_between_flushes(events)
    assert first == fake.audio_for("Sure, I can help with that.")
    assert second == fake.audio_for("What day works for you?")
    # 8000 bytes per second of speech: the length follows the text
    assert len(first) == round(len("Sure, I can help with that.") / fake.chars_per_second * 8000)
    [conn] = fake.connections
    assert conn.params == {"model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": "8000"}
    assert conn.flushes == ["Sure, I can help with that.", "What day works for you?"]
    assert conn.closed_by_client  # Close on the way out


async def test_socket_is_open_before_the_first_speak(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    tts = make_tts(fake_deepgram_tts)
    async with tts.open(MULAW_8K, CALL):
        assert len(fake_deepgram_tts.connections) == 1  # warm: opened by open() itself


async def test_flushes_asked_for_while_one_is_in_flight_are_merged(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    fake.gate = trio.Event()  # the first flush's audio waits until we say so
    tts = make_tts(fake)
    async with tts.open(MULAW_8K, CALL) as stream:
        for sentence in ("One.", "Two.", "Three."):
            await stream.speak(sentence)
            await stream.flush()
        await stream.flush()  # nothing new spoken: answered with the previous flush
        fake.gate.set()
        events = await collect_until(stream, 4)
    # merged, with the space the engine leaves out between sentences put back
    assert fake.flushed_texts == ["One.", "Two. Three."]
    assert flushed_sequences(events) == [1, 2, 3, 4]
    first, second, third, fourth = audio_between_flushes(events)
    assert first == fake.audio_for("One.")
    assert second == fake.audio_for("Two. Three.")  # merged: both answered after it
    assert third == fourth == b""


async def test_flush_with_nothing_pending_is_answered_at_once(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    tts = make_tts(fake_deepgram_tts)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.flush()
        events = await collect_until(stream, 1)
    assert events == [Flushed(1)]
    assert fake_deepgram_tts.flushed_texts == []


async def test_clear_stops_audio_and_drops_unanswered_flushes(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    async with make_tts(fake).open(MULAW_8K, CALL) as stream:
        after = await _interrupt_a_long_answer(fake, stream)
    # Nothing of the cleared text after clear(): exactly the new text's audio, and the
    # cleared flush (1) is never answered.
    assert flushed_sequences(after) == [2]
    assert audio_between_flushes(after) == [fake.audio_for("Okay.")]
    [conn] = fake.connections
    assert conn.clears == 1
    # The fake really was interrupted mid-answer.
    full = len(fake.audio_for(LONG_ANSWER)) + len(fake.audio_for("Okay."))
    assert conn.audio_bytes_sent < full


async def test_clear_drops_text_spoken_but_not_flushed(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak("Never mind this. ")
        await stream.clear()
        await stream.speak("Say this.")
        await stream.flush()
        events = await collect_until(stream, 1)
    assert audio_between_flushes(events) == [fake.audio_for("Say this.")]
    assert fake.flushed_texts == ["Say this."]


async def test_flush_budget_keeps_each_socket_under_the_limit_over_a_long_call(
    fake_deepgram_tts: FakeDeepgramTTS, caplog: pytest.LogCaptureFixture
) -> None:
    # Deepgram's 20 flushes per 60 s, scaled down: at most 6 per 0.5 s on one socket in
    # the fake; the plugin allows itself 5 per 0.6 s on one socket, then moves to a new one.
    fake = fake_deepgram_tts
    fake.flush_limit = 6
    fake.flush_window_s = 0.5
    tts = make_tts(fake, flush_budget=5, flush_window_s=0.6, max_flushes_in_flight=100)
    sentences = [f"Sentence number {i}. " for i in range(40)]
    async with tts.open(MULAW_8K, CALL) as stream:
        async with trio.open_nursery() as nursery:

            async def script() -> None:
                for sentence in sentences:  # one sentence every 25 ms, flushed each time
                    await stream.speak(sentence)
                    await stream.flush()
                    await trio.sleep(0.025)

            nursery.start_soon(script)
            events = await collect_until(stream, len(sentences))
    assert fake.warnings_sent == 0
    for conn in fake.connections:
        assert fake.max_flushes_in_window(connection=conn) <= 5  # our budget, per socket
    assert len(fake.connections) > 1  # the budget was spent: it went on on new sockets
    assert "".join(fake.flushed_texts) == "".join(sentences)  # nothing lost, nothing twice
    assert flushed_sequences(events) == list(range(1, len(sentences) + 1))
    audio = b"".join(audio_between_flushes(events))
    assert audio == b"".join(fake.audio_for(t) for t in fake.flushed_texts)


async def test_without_the_budget_the_fake_warns(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    # The control for the test above: the same kind of burst, budget off.
    fake = fake_deepgram_tts
    fake.flush_limit = 6
    fake.flush_window_s = 5.0
    tts = make_tts(fake, flush_budget=1000, max_flushes_in_flight=1000)
    async with tts.open(MULAW_8K, CALL) as stream:
        for i in range(8):
            await stream.speak(f"S{i}. ")
            await stream.flush()
        with trio.move_on_after(0.5):
            async for _ in stream:
                pass
    # At least the 7th flush is refused (the 8th too, unless the plugin saw the first
    # Warning in time and held it back: see the next test).
    assert fake.warnings_sent >= 1
    assert len(fake.connections[0].flushes) == 6


async def test_a_chatty_call_past_the_flush_limit_goes_on_at_once_on_a_new_socket(
    fake_deepgram_tts: FakeDeepgramTTS, caplog: pytest.LogCaptureFixture
) -> None:
    # The benchmark's bug: a flush per sentence, the budget spent, and the next sentence
    # waited until the minute freed a slot (seconds of silence for the caller). Deepgram
    # counts flushes per socket, so a fresh socket has a fresh budget.
    fake = fake_deepgram_tts
    fake.flush_limit = 3
    fake.flush_window_s = 60.0
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    sentences = [f"Sentence number {i}." for i in range(8)]
    events = []
    with caplog.at_level(logging.INFO, logger="hookline.tts.deepgram"):
        async with tts.open(MULAW_8K, CALL) as stream:
            with trio.fail_after(20):  # far less than the 60 s window
                for i, sentence in enumerate(sentences, start=1):
                    await stream.speak(sentence)
                    await stream.flush()
                    events += await collect_until(stream, i)
    assert fake.warnings_sent == 0
    assert flushed_sequences(events) == list(range(1, len(sentences) + 1))
    assert audio_between_flushes(events) == [fake.audio_for(s) for s in sentences]
    assert fake.flushed_texts == sentences  # each spoken once, in order
    assert [c.flushes for c in fake.connections] == [
        sentences[0:3],
        sentences[3:6],
        sentences[6:8],
        [],  # the spare opened near the third socket's limit: it heard nothing
    ]
    assert fake.connections[3].speaks == []
    assert all(c.closed_by_client for c in fake.connections)  # the old ones were closed
    rotated = [r for r in caplog.records if "continuing on a new one" in r.getMessage()]
    assert len(rotated) == 2
    assert all(r.levelno == logging.INFO and r.call_id == "tts-test-call" for r in rotated)


async def test_a_burst_past_the_flush_limit_loses_and_repeats_nothing(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    # Flushes asked for while one is in flight merge; at the limit the held ones move
    # to a new socket once the old one has answered everything it was asked.
    fake = fake_deepgram_tts
    fake.chunk_bytes = 400
    fake.chunk_interval_s = 0.001
    tts = make_tts(fake, flush_budget=2, flush_window_s=60.0)
    sentences = [f"Sentence number {i}. " for i in range(12)]
    events = []
    async with tts.open(MULAW_8K, CALL) as stream:
        with trio.fail_after(20):
            for i, sentence in enumerate(sentences, start=1):
                await stream.speak(sentence)
                await stream.flush()
                await trio.sleep(0.002)
                if i % 4 == 0:  # at least three Flush however slow the machine is
                    events += await collect_until(stream, i)
    assert fake.warnings_sent == 0
    assert flushed_sequences(events) == list(range(1, len(sentences) + 1))
    assert "".join(fake.flushed_texts) == "".join(sentences)
    audio = b"".join(audio_between_flushes(events))
    assert audio == b"".join(fake.audio_for(t) for t in fake.flushed_texts)
    assert len(fake.connections) > 1
    assert all(len(c.flushes) <= 2 for c in fake.connections)


async def test_when_no_new_socket_opens_the_stream_waits_for_the_budget(
    fake_deepgram_tts: FakeDeepgramTTS, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=1, flush_window_s=0.5, reconnect_attempts=1)
    async with tts.open(MULAW_8K, CALL) as stream:
        # Every next socket is refused: the spare that "One." spends the budget for too.
        fake.reject_auth = True
        await stream.speak("One.")
        await stream.flush()
        events = await collect_until(stream, 1)
        with caplog.at_level(logging.WARNING, logger="hookline.tts.deepgram"):
            await stream.speak("Two.")
            await stream.flush()
            with trio.fail_after(10):
                events = await collect_until(stream, 2)
    assert audio_between_flushes(events) == [fake.audio_for("Two.")]
    assert len(fake.connections) == 1  # the old socket, once its window freed
    assert fake.connections[0].flushes == ["One.", "Two."]
    assert fake.rejected_connections >= 1
    assert any("waiting" in r.getMessage() for r in caplog.records)


async def test_clear_before_a_rotation_drops_the_old_sockets_audio(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    # Barge-in mid-answer with the budget spent: the next sentence goes to a new socket,
    # and nothing of the interrupted answer (still streaming on the old one) is heard.
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=1, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        after = await _interrupt_a_long_answer(fake, stream)
    assert flushed_sequences(after) == [2]
    assert audio_between_flushes(after) == [fake.audio_for("Okay.")]
    old, new, *spare = fake.connections  # the new socket's budget is spent at once
    assert old.clears == 1
    assert new.flushes == ["Okay."]
    assert all(s.speaks == [] for s in spare)


async def test_clear_during_a_rotation_drops_the_text_it_carried(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=1, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        # Hold the next socket's handshake: "One." spends the budget, so the spare opens
        # (and is held); the rotation waits for it, and the clear() lands meanwhile.
        open_socket, connecting, release = stream._open_socket, trio.Event(), trio.Event()

        async def held_open_socket():  # type: ignore[no-untyped-def]
            connecting.set()
            await release.wait()
            return await open_socket()

        stream._open_socket = held_open_socket
        await stream.speak("One.")
        await stream.flush()
        await collect_until(stream, 1)
        async with trio.open_nursery() as nursery:

            async def flush_two() -> None:
                await stream.speak("Never mind this.")
                await stream.flush()  # the budget is spent: this goes to a new socket

            nursery.start_soon(flush_two)
            await connecting.wait()
            await trio.testing.wait_all_tasks_blocked()  # flush_two waits for the spare
            nursery.start_soon(stream.clear)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        stream._open_socket = open_socket
        await stream.speak("Say this.")
        await stream.flush()
        with trio.fail_after(10):
            after = await collect_until(stream, 3)
    assert flushed_sequences(after) == [3]
    assert audio_between_flushes(after) == [fake.audio_for("Say this.")]
    assert fake.flushed_texts == ["One.", "Say this."]
    old, new, *spare = fake.connections  # the new socket's budget is spent at once
    assert old.speaks == ["One.", "Never mind this."]
    assert new.speaks == ["Say this."]
    assert all(s.speaks == [] for s in spare)


async def test_reconnect_respeaks_only_text_not_yet_delivered(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    first, second, third = "First sentence. ", "Second sentence is longer. ", "Third."
    tts = make_tts(fake)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak(first)
        await stream.flush()
        delivered = await collect_until(stream, 1)
        # Abort the TCP connection one chunk into the second sentence's audio.
        fake.drop_after_bytes = len(fake.audio_for(first)) + 1
        await stream.speak(second)
        await stream.flush()
        await stream.speak(third)
        rest = await collect_until(stream, 2)
        await stream.flush()
        rest += await collect_until(stream, 3)
    assert audio_between_flushes(delivered) == [fake.audio_for(first)]
    assert flushed_sequences(rest) == [2, 3]
    assert len(fake.connections) == 2
    old, new = fake.connections
    assert old.dropped
    assert old.flushes == [first, second]
    # Only the unconfirmed text goes to the new socket; the first sentence is not repeated.
    assert new.speaks == [second, third]
    assert new.flushes == [second, third]
    second_audio, third_audio = audio_between_flushes(rest)
    assert second_audio.endswith(fake.audio_for(second))  # after the partial, all of it
    assert third_audio == fake.audio_for(third)


async def test_refused_key_is_a_clear_auth_error(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake_deepgram_tts.reject_auth = True
    tts = make_tts(fake_deepgram_tts)
    with pytest.raises(ProviderAuthError) as info:
        async with tts.open(MULAW_8K, CALL):
            pass
    message = str(info.value)
    assert "DEEPGRAM_API_KEY" in message
    assert "401" in message and "Invalid credentials" in message
    assert fake_deepgram_tts.rejected_connections == 1  # no retries on a bad key


async def test_unreachable_server_is_unavailable(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    with trio.socket.socket() as sock:  # a port with nobody listening
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tts = make_tts(fake_deepgram_tts, url=f"ws://127.0.0.1:{port}/v1/speak", reconnect_attempts=2)
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        async with tts.open(MULAW_8K, CALL):
            pass


async def test_unknown_and_malformed_messages_are_ignored_with_a_log_line(
    fake_deepgram_tts: FakeDeepgramTTS, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_deepgram_tts
    fake.extra_frames = [
        "this is not json",
        '{"type":"SomethingNew","x":1}',
        '{"type":"Flushed","sequence_id":"not a number"}',
        '{"no_type":true}',
    ]
    tts = make_tts(fake)
    with caplog.at_level(logging.WARNING, logger="hookline.tts.deepgram"):
        async with tts.open(MULAW_8K, CALL) as stream:
            await stream.speak("Still fine.")
            await stream.flush()
            events = await collect_until(stream, 1)
    assert audio_between_flushes(events) == [fake.audio_for("Still fine.")]
    ignored = [r for r in caplog.records if "ignored an unexpected message" in r.getMessage()]
    assert len(ignored) == 4
    assert ignored[0].call_id == "tts-test-call"  # on every line (the formatter shows it)
    assert "SomethingNew" in ignored[1].getMessage()


async def test_a_flush_the_server_refuses_is_sent_again_on_a_new_socket(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    # The server counts stricter than our budget expects: it refuses the third flush
    # with a Warning. The plugin must neither wait forever for that Flushed nor wait out
    # the server's window: it re-speaks the refused text on a fresh socket.
    fake = fake_deepgram_tts
    fake.flush_limit = 2
    fake.flush_window_s = 60.0
    tts = make_tts(fake, flush_budget=10, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        for i, text in enumerate(("One.", "Two.", "Three."), start=1):
            await stream.speak(text)
            await stream.flush()
            if i < 3:
                events = await collect_until(stream, i)
        with trio.fail_after(10):
            events = await collect_until(stream, 3)
    assert fake.warnings_sent == 1
    assert fake.flushed_texts == ["One.", "Two.", "Three."]
    assert audio_between_flushes(events) == [fake.audio_for("Three.")]
    old, new = fake.connections
    assert old.flushes == ["One.", "Two."]
    assert new.flushes == ["Three."]


async def test_a_server_that_refuses_a_fresh_sockets_first_flush_is_waited_out(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    # If the server ever counted per key rather than per socket, rotating would only
    # open socket after socket: a refused first flush waits out the window instead.
    fake = fake_deepgram_tts
    fake.flush_limit = 0
    fake.flush_window_s = 0.3
    tts = make_tts(fake, flush_budget=10, flush_window_s=0.3)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak("One.")
        await stream.flush()
        with trio.move_on_after(1.0):
            async for _ in stream:
                pass
    assert len(fake.connections) == 1
    assert 2 <= fake.warnings_sent <= 5  # one per window, not a storm


async def test_a_format_deepgram_refuses_is_a_clear_non_retryable_error(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    tts = make_tts(fake_deepgram_tts)
    with pytest.raises(ProviderError) as info:
        async with tts.open(AudioFormat(encoding="opus", sample_rate=48000), CALL):
            pass
    assert not isinstance(info.value, ProviderUnavailable | ProviderAuthError)
    assert "HTTP 400" in str(info.value) and "opus" in str(info.value)
    assert fake_deepgram_tts.rejected_connections == 1  # not retried


async def _wait_for(predicate) -> None:
    # Polls the fake's records: the fake has no event for "a client connected".
    with trio.fail_after(5):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.005)


async def test_a_socket_the_server_drops_while_idle_is_reopened_at_once(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, rewarm_min_lifetime_s=0.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak("Hello.")
        await stream.flush()
        await collect_until(stream, 1)
        assert await fake.drop_connections() == 1
        # Warm again before anything else is spoken.
        await _wait_for(lambda: len(fake.connections) == 2 and not fake.connections[1].dropped)
        await stream.speak("Still here.")
        await stream.flush()
        events = await collect_until(stream, 2)
    assert audio_between_flushes(events) == [fake.audio_for("Still here.")]
    assert fake.connections[1].speaks == ["Still here."]  # nothing old re-spoken


async def test_a_socket_that_dies_young_is_reopened_only_when_needed(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, rewarm_min_lifetime_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        await fake.drop_connections()
        await trio.sleep(0.1)
        assert len(fake.connections) == 1  # no spinning on a server that closes at once
        await stream.speak("Hello.")
        await stream.flush()
        events = await collect_until(stream, 1)
    assert audio_between_flushes(events) == [fake.audio_for("Hello.")]
    assert len(fake.connections) == 2


async def test_a_key_revoked_mid_call_fails_the_stream_with_an_auth_error(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, rewarm_min_lifetime_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak("Hello.")
        await stream.flush()
        await collect_until(stream, 1)
        fake.reject_auth = True
        await fake.drop_connections()
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await stream.speak("Are you there?")  # reconnects, and is refused
        with pytest.raises(ProviderAuthError):
            await stream.flush()
        with pytest.raises(ProviderAuthError):  # the audio consumer learns it too
            async for _ in stream:
                pass
        with pytest.raises(ProviderAuthError):  # and the stream stays failed
            await stream.speak("Hello?")


async def test_every_flush_is_answered_once_in_order_through_repeated_drops(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    # A chaos run: the fake aborts the socket every few sentences, mid-audio or idle.
    # Audio streams faster than sentences arrive, as with the real service.
    fake = fake_deepgram_tts
    fake.chunk_bytes = 400
    fake.chunk_interval_s = 0.0005
    tts = make_tts(fake, rewarm_min_lifetime_s=0.0, reconnect_attempts=5)
    sentences = [f"Sentence {i} of the answer." for i in range(30)]
    seen: list[int] = []
    drops: list[tuple[int, int]] = []  # (sockets opened so far, flushes confirmed)
    async with tts.open(MULAW_8K, CALL) as stream:
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                async for event in stream:
                    if isinstance(event, Flushed):
                        seen.append(event.sequence)
                        if event.sequence == len(sentences):
                            return

            nursery.start_soon(consume)
            for i, sentence in enumerate(sentences):
                await stream.speak(sentence)
                await stream.flush()
                await trio.sleep(0.01)
                if i % 4 == 3:
                    drops.append((len(fake.connections), len(seen)))
                    await fake.drop_connections()
    assert seen == list(range(1, len(sentences) + 1))  # each once, in order
    assert len(fake.connections) > len(drops)
    spoken = " ".join(fake.flushed_texts)
    assert all(s in spoken for s in sentences)  # nothing lost
    # Only unconfirmed text is re-spoken: a socket opened after a drop never gets a
    # sentence whose Flushed had already come back.
    for opened, confirmed in drops:
        for conn in fake.connections[opened:]:
            later = " ".join(conn.speaks)
            assert not [s for s in sentences[:confirmed] if s in later]


async def test_wss_connections_share_one_tls_context_built_off_the_trio_thread(
    fake_deepgram_tts: FakeDeepgramTTS, tls_context_builds: list[int]
) -> None:
    # Building a TLS context loads the CA bundle (~25 ms of CPU): done on the trio thread
    # at each connect, it stalls every call in flight whenever a call starts.
    built_on = tls_context_builds
    hellos: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tls_sink, hellos)
        tts = make_tts(
            fake_deepgram_tts,
            url=f"wss://127.0.0.1:{port}/v1/speak",
            connect_timeout_s=0.3,
            reconnect_attempts=1,
        )
        await tts.prepare()
        for call_id in ("call-t1", "call-t2"):
            with pytest.raises(ProviderUnavailable):
                async with tts.open(MULAW_8K, CallInfo(call_id=call_id)):
                    pass
        await tts.synthesize("Hello.", MULAW_8K)  # REST shares it too
        nursery.cancel_scope.cancel()
    assert len(hellos) >= 2 and all(h[:1] == b"\x16" for h in hellos)  # TLS handshakes
    assert len(built_on) == 1  # once, in prepare(): not per connection
    assert threading.get_ident() not in built_on  # and not on the trio thread


# ---------------------------------------------------------------------- the spare socket
# Rotation to a new socket at the flush limit must not put a connect handshake (TCP +
# TLS + upgrade, ~50-150 ms to Deepgram) in front of the held sentence: the next socket
# is opened in the background once the budget is nearly spent. These tests run in
# virtual time (loopback I/O stays real) with the fake's upgrade answer held 0.2 s.

ACCEPT_DELAY_S = 0.2


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.01)


async def _chat(
    stream: TTSStream, sentences: list[str], *, first: int = 1, pause_s: float = 1.0
) -> list:
    """Speak and flush one sentence at a time (flush numbers from `first`), `pause_s`
    apart (the caller hears the previous one meanwhile); for each, the seconds from its
    speak() to its first audio."""
    waits = []
    for i, sentence in enumerate(sentences, start=first):
        await trio.sleep(pause_s)
        start = trio.current_time()
        await stream.speak(sentence)
        await stream.flush()
        first = await stream.__anext__()
        assert isinstance(first, AudioChunk)
        waits.append(trio.current_time() - start)
        await collect_until(stream, i)
    return waits


async def test_a_rotation_pays_no_handshake_before_the_held_sentence(
    fake_deepgram_tts: FakeDeepgramTTS, clock: trio.testing.MockClock
) -> None:
    fake = fake_deepgram_tts
    fake.accept_delay_s = ACCEPT_DELAY_S
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    sentences = [f"Sentence number {i}." for i in range(8)]
    async with tts.open(MULAW_8K, CALL) as stream:
        waits = await _chat(stream, sentences)
        assert stream.connections == 3  # DeepgramTTSStream: sockets that became current
    assert [c.flushes for c in fake.connections] == [
        sentences[0:3],
        sentences[3:6],
        sentences[6:8],
        [],  # the third socket's spare, opened near its limit and never needed
    ]
    # Sentences 4 and 7 went out on a new socket; none waited for a handshake.
    assert max(waits) < ACCEPT_DELAY_S, waits
    # One socket per rotation (the spare), no other; every one closed with Close.
    assert fake.connections[3].speaks == []
    assert all(c.closed_by_client for c in fake.connections)
    await _wait_for(lambda: fake.open_sockets == 0)


async def test_a_spare_that_fails_to_open_leaves_the_rotation_to_connect(
    fake_deepgram_tts: FakeDeepgramTTS,
    clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_deepgram_tts
    fake.accept_delay_s = ACCEPT_DELAY_S
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    sentences = [f"Sentence number {i}." for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="hookline.tts.deepgram"):
        async with tts.open(MULAW_8K, CALL) as stream:
            fake.reject_auth = True  # every spare near the limit is refused...
            waits = await _chat(stream, sentences[:3])
            await _wait_for(lambda: fake.rejected_connections == 3)
            fake.reject_auth = False  # ...but the rotation's own connect is not
            waits += await _chat(stream, sentences[3:], first=4)
    assert fake.rejected_connections == 3  # one spare tried at each of the last 3 flushes
    assert [c.flushes for c in fake.connections[:2]] == [sentences[0:3], sentences[3:4]]
    # The held sentence waited for the connect, as before spares; nothing else did.
    assert waits[3] >= ACCEPT_DELAY_S and max(waits[:3]) < ACCEPT_DELAY_S, waits
    failed = [r for r in caplog.records if "could not open a spare" in r.getMessage()]
    assert len(failed) == 3 and "401" in failed[0].getMessage()
    assert all(r.levelno == logging.WARNING and r.call_id == CALL.call_id for r in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_aclose_closes_an_open_spare(fake_deepgram_tts: FakeDeepgramTTS) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak("One.")
        await stream.flush()
        await collect_until(stream, 1)
        await _wait_for(lambda: fake.open_sockets == 2)  # the spare is open
    current, spare = fake.connections
    assert spare.speaks == [] and spare.closed_by_client
    assert current.closed_by_client
    await _wait_for(lambda: fake.open_sockets == 0)


async def test_aclose_during_a_spares_handshake_leaks_no_socket(
    fake_deepgram_tts: FakeDeepgramTTS, clock: trio.testing.MockClock
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        fake.accept_delay_s = ACCEPT_DELAY_S  # the spare's upgrade answer is slow
        await stream.speak("One.")
        await stream.flush()
        await collect_until(stream, 1)
        assert len(fake.connections) == 1  # the spare's upgrade is not answered yet
    await trio.sleep(1.0)  # past the held upgrade
    assert fake.open_sockets == 0  # the half-open spare was hung up, not left open
    assert fake.connections[0].closed_by_client
    assert all(c.speaks == [] for c in fake.connections[1:])


async def test_clear_while_a_spare_is_open_reaches_only_the_current_socket(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        # The long answer's flush leaves 2 in the budget: the spare opens; then the
        # barge-in clears, and "Okay." (flush 2) is heard alone.
        after = await _interrupt_a_long_answer(fake, stream)
        await _wait_for(lambda: len(fake.connections) == 2)
        events = []
        for i, sentence in enumerate(("Three.", "Four."), start=3):
            await stream.speak(sentence)
            await stream.flush()
            with trio.fail_after(10):
                events += await collect_until(stream, i)
    assert audio_between_flushes(after) == [fake.audio_for("Okay.")]
    assert audio_between_flushes(events) == [fake.audio_for("Three."), fake.audio_for("Four.")]
    first, spare, *later = fake.connections
    assert first.clears == 1 and first.flushes == [LONG_ANSWER, "Okay.", "Three."]
    # The spare heard no Clear and nothing of the cleared answer: only what came after.
    assert spare.clears == 0 and spare.speaks == ["Four."] and spare.flushes == ["Four."]
    assert all(c.speaks == [] for c in later)


async def test_a_call_that_never_nears_the_limit_opens_no_spare(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    tts = make_tts(fake, flush_budget=5, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        for i in (1, 2):  # 3 flushes left in the window: no spare yet
            await stream.speak(f"Sentence {i}.")
            await stream.flush()
            await collect_until(stream, i)
        await trio.sleep(0.2)
        assert len(fake.connections) == 1
        await stream.speak("Sentence 3.")  # 2 left: now the next socket opens
        await stream.flush()
        await collect_until(stream, 3)
        await _wait_for(lambda: len(fake.connections) == 2)
    assert fake.connections[1].speaks == []


async def test_a_drop_with_a_spare_open_goes_on_on_the_spare(
    fake_deepgram_tts: FakeDeepgramTTS,
) -> None:
    fake = fake_deepgram_tts
    first, second = "First sentence. ", "Second sentence is longer. "
    tts = make_tts(fake, flush_budget=3, flush_window_s=60.0)
    async with tts.open(MULAW_8K, CALL) as stream:
        await stream.speak(first)
        await stream.flush()
        await collect_until(stream, 1)
        await _wait_for(lambda: fake.open_sockets == 2)  # the spare is open
        # Abort the current socket one chunk into the second sentence's audio.
        fake.drop_after_bytes = len(fake.audio_for(first)) + 1
        await stream.speak(second)
        await stream.flush()
        with trio.fail_after(10):
            rest = await collect_until(stream, 2)
        assert stream.connections == 2  # the spare became current: no new connect
    old, spare, *later = fake.connections
    assert old.dropped and old.flushes == [first, second]
    assert spare.speaks == [second] and spare.flushes == [second]  # only the unconfirmed
    assert audio_between_flushes(rest)[0].endswith(fake.audio_for(second))
    assert all(c.speaks == [] for c in later)
