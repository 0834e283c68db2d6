"""One call: a nursery that owns the leg, the STT and TTS streams and the responses.

    run()
     ├─ outer nursery: the speaker (the only writer to the leg: audio, marks, clears),
     │   greeting queued from cache first (no TTS round trip),
     │   _pump_leg (caller audio -> STT, marks -> playback, DTMF, hang-up)
     │   └─ main scope (cancelled by end()): STT + TTS streams open, then
     │        _pump_stt (turn-taking, barge-in), _pump_tts (TTS events -> speaker),
     │        _responder (one response at a time, each in its own cancel scope),
     │        _silence_watchdog, _max_duration
     └─ closing words (goodbye or apology) while the leg still works, hang-up, the record

A provider failure ends only this call: it is recorded as the end reason and the caller
hears an apology when the leg still works.
"""

from __future__ import annotations

import array
import bisect
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from ..audio import MULAW_8K, SAMPLE_RATE, seconds_of
from ..errors import ProviderError, ProviderUnavailable
from ..events import (
    AgentSpoke,
    BargeIn,
    CallEvent,
    CallRecord,
    DtmfReceived,
    ProviderFailed,
    Reprompted,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    TurnMetrics,
    TurnRecord,
    UsageReported,
    UserSpeechStarted,
    UserTurnEnded,
)
from ..logs import CallLog, shown_number
from ..prompt import system_messages
from ..providers import (
    AudioIn,
    CallLeg,
    DtmfIn,
    HangUp,
    MarkReached,
    Message,
    STTStream,
    ToolCallRequest,
    TTSStream,
    Usage,
)
from .metrics import TurnTiming
from .playback import Playback, Segment
from .response import Agent, PhraseName, repair_history, respond
from .speaker import Speaker
from .tool_runner import ToolOutcome
from .turns import Decision, TurnTaker

if TYPE_CHECKING:
    from ..runtime import Handoff, Runtime

__all__ = ["CallSession"]

_log = logging.getLogger("hookline.call")

# After the last DTMF digit, wait this long for more before treating them as the turn.
DTMF_GAP_S = 1.5
# How long provider streams get to close cleanly (CloseStream, final messages).
CLOSE_TIMEOUT_S = 5.0


@dataclass
class _UserTurn:
    """A finished user turn waiting for its response."""

    index: int
    text: str
    timing: TurnTiming


class CallSession:
    """Runs one call on `leg` with the runtime's providers. Create, then `await run()`."""

    def __init__(self, runtime: Runtime, leg: CallLeg, resumed: Handoff | None = None) -> None:
        self.runtime = runtime
        self.leg = leg
        self.info = leg.info
        self.log = CallLog(_log, {"call_id": self.info.call_id})
        policy = runtime.config.policy
        self.policy = policy
        self.playback = Playback(self.info.call_id)
        self.speaker = Speaker(leg, self.playback, f"tts/{runtime.provider_names.get('tts')}")
        self.turn_taker = TurnTaker(policy.barge_in_min_words, policy.backchannels)
        self.agent = Agent(runtime.llm, runtime.tools, policy, self.info, self, self.log)
        # A caller back from a transfer nobody took continues the same conversation.
        self.resumed = resumed
        if resumed is not None:
            # Copies: the transferred call may still be finishing with its own history.
            self.history = [msgspec.structs.replace(m) for m in resumed.history]
            repair_history(self.history)
            self.history.append(resumed.note("take_message" in runtime.tools))
        else:
            self.history = system_messages(runtime, self.info)
        self.stt: STTStream | None = None
        self.tts: TTSStream | None = None
        self.turns: list[TurnRecord] = []
        self.segments: dict[int, list[Segment]] = {}
        self.usage: dict[str, float] = {}
        self.end_reason: str | None = None
        self._hangup_needed = False
        self._leg_alive = True
        self._closing_phrase: str | None = None
        self._main_scope: trio.CancelScope | None = None
        self._work_scope: trio.CancelScope | None = None
        self._main_nursery: trio.Nursery | None = None
        self._response_scope: trio.CancelScope | None = None
        self._pending_turn: _UserTurn | None = None
        self._turn_ready = trio.Event()
        self._agent_timing: dict[int, TurnTiming] = {}
        self._activity = trio.Event()
        self._last_activity = 0.0
        self._reprompts = 0
        self._user_speaking = False
        self._dtmf: list[str] = []
        self._dtmf_scope: trio.CancelScope | None = None
        self._filler_turns: set[int] = set()
        self._barged_in: set[int] = set()  # agent turns the caller interrupted
        # Audio clock: arrival time of caller audio by byte offset, to turn STT word
        # timings (seconds of call audio) into monotonic times.
        self._audio_offsets = array.array("q")
        self._audio_times = array.array("d")
        self._audio_bytes = 0
        self._stt_backlog: list[bytes] | None = []  # audio before the STT stream opened
        self._started_wall = 0.0
        self._shutdown_requested = False
        self._tools_running = 0  # tool calls started and not yet finished (for `state`)

    @property
    def started(self) -> float:
        """Wall-clock time (time.time()) the call started; 0 before `run`."""
        return self._started_wall

    @property
    def state(self) -> str:
        """What the call is doing now, for the dashboard: "in a tool", "speaking" or
        "listening" (read-only; the engine never looks at it)."""
        if self._tools_running:
            return "in a tool"
        if self.playback.speaking:
            return "speaking"
        return "listening"

    # ================================================================== lifecycle

    async def run(self) -> CallRecord:
        self._started_wall = time.time()
        self.runtime.sessions.add(self)
        self.runtime.call_started(self.info, self._started_wall)
        self.log.info(
            "call started from %s to %s",
            shown_number(self.info.from_number, self.runtime),
            shown_number(self.info.to_number, self.runtime),
        )
        try:
            # The greeting goes out before anything else is opened: it is cached audio,
            # so the caller hears the agent within one scheduler tick. A caller back from
            # a transfer is not greeted again: the model speaks first, told the outcome.
            greeting = self.runtime.config.agent.greeting
            turn = self._new_turn("agent", "" if self.resumed else greeting)
            message = Message(role="assistant", content=greeting)
            self._agent_timing[turn] = TurnTiming()
            self._mark_activity()
            if self.resumed is None:
                self.history.append(message)
            else:
                self._pending_turn = _UserTurn(turn, "", TurnTiming())
                self._turn_ready.set()
            async with trio.open_nursery() as outer:
                outer.start_soon(self._run_speaker)
                if self.resumed is None:
                    await self.play_phrase(greeting, turn, message)  # cached: no checkpoint
                outer.start_soon(self._pump_leg)
                await self._run_main()
                await self._closing()
                outer.cancel_scope.cancel()
        except ProviderError as e:
            self._leg_gone()
            self._fail(e, "telephony")
        except Exception as e:
            self.log.exception("call crashed")
            self._set_reason(f"error:{type(e).__name__}")
        finally:
            self.runtime.sessions.discard(self)
            record = self._record()
            self.runtime.call_ended(self.info, record)
            self.log.info("call ended: %s (%.1f s)", record.end_reason, record.duration)
        return record

    async def _run_main(self) -> None:
        if self.end_reason is not None:  # the caller hung up during the greeting
            return
        try:
            # end() cancels the work scope once it exists (the main scope while opening);
            # the provider streams then close gracefully, within a bounded time.
            with trio.CancelScope() as self._main_scope:
                async with self.runtime.stt.open(MULAW_8K, self.info) as self.stt:
                    backlog, self._stt_backlog = self._stt_backlog or [], None
                    for chunk in backlog:
                        await self.stt.send(chunk)
                    async with self.runtime.tts.open(MULAW_8K, self.info) as self.tts:
                        self.speaker.attach(self.tts)
                        try:
                            await self._work()
                        finally:
                            self.speaker.attach(None)
                        self._main_scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
        except ProviderError as e:
            self._fail(e, "stt" if self.stt is None else "tts")
        except Exception as e:
            self.log.exception("call engine failed")
            self._fail_unexpected(e)

    async def _work(self) -> None:
        with trio.CancelScope() as self._work_scope:
            async with trio.open_nursery() as nursery:
                self._main_nursery = nursery
                nursery.start_soon(self._guard, self._pump_stt, "stt")
                nursery.start_soon(self._guard, self._pump_tts, "tts")
                nursery.start_soon(self._guard, self._responder, "llm")
                nursery.start_soon(self._guard, self._silence_watchdog, "telephony")
                nursery.start_soon(self._guard, self._max_duration, "telephony")
                if self._shutdown_requested:
                    nursery.start_soon(self._guard, self.finish, "telephony", "shutdown")
        self._main_nursery = None

    async def _run_speaker(self) -> None:
        """The speaker lives as long as the leg: a failure there means the leg broke."""
        try:
            await self.speaker.run()
        except ProviderError as e:
            self._leg_gone()
            self._fail(e, "telephony")
        except Exception as e:
            self.log.exception("the speaker failed")
            self._leg_gone()
            self._fail_unexpected(e)

    async def _guard(self, fn: Any, kind: str, *args: Any) -> None:
        """Run a pump; a provider failure or a bug ends the call, never the process."""
        try:
            await fn(*args)
        except ProviderError as e:
            self._fail(e, kind)
        except Exception as e:
            self.log.exception("%s task failed", kind)
            self._fail_unexpected(e)

    def _fail(self, e: ProviderError, kind: str) -> None:
        provider = e.provider or f"{kind}/{self.runtime.provider_names.get(kind, '?')}"
        self.log.error("provider %s failed: %s", provider, e)
        self.emit(
            ProviderFailed(t=trio.current_time(), provider=provider, error=str(e), fatal=True)
        )
        self._end(f"provider_failed:{provider}", closing=self.runtime.config.agent.apology)

    def _fail_unexpected(self, e: Exception) -> None:
        self._end(f"error:{type(e).__name__}", closing=self.runtime.config.agent.apology)

    def _set_reason(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason

    def _end(self, reason: str, *, closing: str | None = None, hangup: bool = True) -> None:
        """End the call: the first reason wins; closing words are said by `_closing`."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._closing_phrase = closing
        self._hangup_needed = hangup
        # Nobody waits for more of the agent's speech now (a shielded end_call waiting
        # for a goodbye a broken TTS stream will never deliver); closing words, if any,
        # are new segments.
        self.playback.drop_unheard()
        scope = self._work_scope or self._main_scope
        if scope is not None:
            scope.cancel()

    def _leg_gone(self) -> None:
        """The caller hung up or the stream stopped: no mark will ever come back. Closing
        the playback wakes every wait for one at once, so the call ends now and frees
        its slot instead of holding it until a tool timeout."""
        self._leg_alive = False
        self.playback.close()

    def request_shutdown(self) -> None:
        """The server is draining: say goodbye and hang up."""
        self._shutdown_requested = True
        if self._main_nursery is not None:
            self._main_nursery.start_soon(self._guard, self.finish, "telephony", "shutdown")

    async def finish(self, reason: str, words: str | None = None) -> None:
        """Say `words` (default: goodbye), wait until heard, hang up."""
        await self._interrupt_response()
        words = words or self.runtime.config.agent.goodbye
        seg = await self.play_phrase(words, self._new_turn("agent", words))
        await seg.heard_event.wait()
        self._end(reason)

    async def _closing(self) -> None:
        """Last words while the leg still works, then hang up. Both bounded in time; a
        telephony failure here is recorded as one (this runs inside the call's nursery,
        so an escaping error would arrive at `run()` as an exception group)."""
        if not self._leg_alive:
            return
        try:
            if self._closing_phrase:
                audio = self.runtime.phrases.get(self._closing_phrase, b"")
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self.policy.apology_timeout_s
                    scope.deadline += seconds_of(audio)
                    await self.speaker.interrupt()  # the TTS stream is closed: the leg only
                    turn = self._new_turn("agent", self._closing_phrase)
                    seg = await self.play_phrase(self._closing_phrase, turn)
                    await seg.heard_event.wait()
            if self._hangup_needed and self._leg_alive:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
                    await self.leg.hangup()
        except ProviderError as e:
            self._fail(e, "telephony")

    # ================================================================== pumps

    async def _pump_leg(self) -> None:
        try:
            async for event in self.leg.events():
                if isinstance(event, AudioIn):
                    await self._caller_audio(event.audio)
                elif isinstance(event, MarkReached):
                    self._mark_reached(event.name)
                elif isinstance(event, DtmfIn):
                    self._dtmf_digit(event.digit)
                elif isinstance(event, HangUp):
                    self._leg_gone()
                    if event.reason in ("caller", "stop"):
                        reason = "caller_hangup"
                    elif event.reason == "transfer":  # the stream ended by our redirect,
                        reason = "transferred"  # maybe before `transfer()` got its answer
                    else:
                        reason = f"telephony:{event.reason}"
                    self._end(reason, hangup=False)
                    return
        except ProviderError as e:
            self._leg_gone()
            self._fail(e, "telephony")
            return
        self._leg_gone()
        self._end("caller_hangup", hangup=False)

    async def _caller_audio(self, audio: bytes) -> None:
        self._audio_offsets.append(self._audio_bytes)
        self._audio_times.append(trio.current_time())
        self._audio_bytes += len(audio)
        if self._stt_backlog is not None:
            self._stt_backlog.append(audio)
        elif self.stt is not None:
            try:
                await self.stt.send(audio)
            except ProviderError as e:
                self._fail(e, "stt")

    def audio_time(self, seconds: float | None) -> float | None:
        """Monotonic time at which call audio position `seconds` arrived from the caller."""
        if seconds is None or not self._audio_offsets:
            return None
        offset = seconds * SAMPLE_RATE
        i = max(0, bisect.bisect_right(self._audio_offsets, offset) - 1)
        frame_start = self._audio_offsets[i]
        return self._audio_times[i] + (offset - frame_start) / SAMPLE_RATE

    async def _pump_stt(self) -> None:
        assert self.stt is not None
        async for event in self.stt:
            for decision in self.turn_taker.feed(event, self._agent_busy()):
                await self._apply(decision)
        raise ProviderUnavailable("the transcript stream ended in the middle of the call")

    async def _apply(self, d: Decision) -> None:
        if d.kind in ("speech_started", "activity"):
            self._user_speaking = True
            self._reprompts = 0
            self._mark_activity()
            if d.kind == "speech_started":
                self.emit(UserSpeechStarted(t=trio.current_time(), turn=self._turn_no() + 1))
        elif d.kind == "barge_in":
            await self._interrupt_response(interim=d.text)
        elif d.kind == "dropped_backchannel":
            self._user_speaking = False
            self._mark_activity()
            self.log.debug("backchannel %r ignored", d.text)
        elif d.kind == "end_turn":
            now = trio.current_time()
            timing = TurnTiming(
                speech_end=self.audio_time(d.speech_end) or now, last_final=now, turn_end=now
            )
            await self._user_turn(d.text, d.reason, timing)

    async def _user_turn(self, text: str, reason: str, timing: TurnTiming) -> None:
        self._user_speaking = False
        await self._interrupt_response()
        self._close_agent_turn()
        index = self._new_turn("user", text)
        assert timing.speech_end is not None
        self.emit(
            UserTurnEnded(
                t=trio.current_time(),
                turn=index,
                text=text,
                speech_end=timing.speech_end,
                reason=reason,
            )
        )
        if self._pending_turn is not None:  # not answered yet: answer both at once
            text = f"{self._pending_turn.text} {text}"
        self._pending_turn = _UserTurn(index, text, timing)
        self._turn_ready.set()
        self._mark_activity()

    async def _responder(self) -> None:
        while True:
            await self._turn_ready.wait()
            self._turn_ready = trio.Event()
            pending, self._pending_turn = self._pending_turn, None
            if pending is None:
                continue
            # Appended only now: a shielded tool of the previous response may have just
            # added its result, which must stay right after its tool call. An empty
            # turn is the agent's opening after a transfer: no caller words to add.
            if pending.text:
                self.history.append(Message(role="user", content=pending.text))
                turn = self._new_turn("agent", "")
            else:
                turn = pending.index
            timing = pending.timing
            self._agent_timing[turn] = timing
            with trio.CancelScope() as scope:
                self._response_scope = scope
                try:
                    await respond(self.agent, _CallResponse(self, turn, timing))
                finally:
                    self._response_scope = None
                    self._tools_running = 0  # a cancelled tool never reports its end
                    repair_history(self.history)
            self._mark_activity()

    async def _pump_tts(self) -> None:
        assert self.tts is not None
        async for event in self.tts:
            self.speaker.tts_event(event)
        raise ProviderUnavailable("the speech stream ended in the middle of the call")

    # ================================================================== speaking

    async def say(self, sentence: str, turn: int, message: Message, timing: TurnTiming) -> None:
        """Speak one sentence of a response (already in `message`) through the TTS stream."""
        await self._stream(self._segment(sentence, turn, message), timing)

    async def _stream(self, seg: Segment, timing: TurnTiming | None = None) -> None:
        if timing is not None:
            # The words are ready now; what follows until the first byte is the TTS's share.
            now = trio.current_time()
            timing.first_sentence = timing.first_sentence or now
            timing.tts_request = timing.tts_request or now
        if not seg.dropped:
            self._count("tts_characters", len(seg.text))
        await self.speaker.stream(seg, timing)

    async def speak(self, text: str, turn: int, message: Message | None = None) -> Segment:
        """Say `text`: from the phrase cache when it is a configured phrase, otherwise
        (words the model wrote, like its own goodbye) through this call's TTS stream, so
        nothing of it outlives the call."""
        if text in self.runtime.phrases or self.tts is None:
            return await self.play_phrase(text, turn, message)
        seg = self._segment(text, turn, message)
        await self._stream(seg, self._agent_timing.get(turn))  # its latency counts too
        return seg

    async def play_phrase(self, text: str, turn: int, message: Message | None = None) -> Segment:
        """Queue a configured phrase from the process cache (synthesized at start-up).

        Text that is not a configured phrase is synthesized for this call and not kept:
        the cache holds only what the config names, so it cannot grow with calls.
        """
        audio = self.runtime.phrases.get(text)
        if audio is None:
            audio = await self.runtime.tts.synthesize(text, MULAW_8K)
            self._count("tts_characters", len(text))
        seg = self._segment(text, turn, message)
        self.speaker.phrase(seg, audio, self._agent_timing.get(turn))
        return seg

    def _segment(self, text: str, turn: int, message: Message | None) -> Segment:
        seg = self.playback.new_segment(text, turn, message)
        self.segments.setdefault(turn, []).append(seg)
        self._mark_activity()
        return seg

    def _mark_reached(self, name: str) -> None:
        seg = self.playback.reached(name)
        if seg is not None:
            self.emit(AgentSpoke(t=trio.current_time(), turn=seg.turn, text=seg.text, heard=True))
            self._mark_activity()

    def filler_unless(self, delay: float, turn: int, answered: trio.Event) -> None:
        """The LLM is asked: unless `answered` is set within `delay` (its first token, its
        failure, or the response's end), say a cached filler while it keeps working."""
        if self._main_nursery is not None:
            self._main_nursery.start_soon(
                self._guard, self._filler_unless, "telephony", delay, turn, answered
            )

    async def _filler_unless(self, delay: float, turn: int, answered: trio.Event) -> None:
        with trio.move_on_after(delay):
            await answered.wait()
        # Past the deadline while the agent is still talking: wait for the gap, and say
        # nothing if the answer came meanwhile (every answer adds speech or ends the turn).
        while self.playback.speaking and not answered.is_set():
            await self.playback.wait_changed()
        if not answered.is_set():
            await self.filler(turn)

    async def filler(self, turn: int) -> None:
        """A cached filler, once per turn, into silence (it waits for the agent's gap)."""
        fillers = self.runtime.config.agent.fillers
        if not fillers or turn in self._filler_turns:
            return
        await self.speaker.until_quiet()
        if turn in self._filler_turns:
            return
        self._filler_turns.add(turn)
        await self.play_phrase(fillers[(turn // 2) % len(fillers)], turn)

    def llm_failed(self, e: ProviderError) -> None:
        """The LLM failed after its own retries: recorded; the call goes on."""
        provider = e.provider or f"llm/{self.runtime.provider_names['llm']}"
        self.log.warning("LLM failed, speaking the fallback line: %s", e)
        self.emit(
            ProviderFailed(t=trio.current_time(), provider=provider, error=str(e), fatal=False)
        )

    # ================================================================== barge-in

    def _agent_busy(self) -> bool:
        return self.playback.speaking or self._response_scope is not None

    async def _interrupt_response(self, interim: str = "") -> None:
        """Stop the agent: cancel the response; the speaker drops unheard speech and
        clears TTS and the leg.

        The history keeps exactly the sentences whose marks came back before the clear.
        """
        busy = self._agent_busy()
        if self._response_scope is not None:
            self._response_scope.cancel()
        if not busy:
            return
        dropped = await self.speaker.interrupt()
        for seg in dropped:
            self.emit(AgentSpoke(t=trio.current_time(), turn=seg.turn, text=seg.text, heard=False))
        if dropped:
            turn = dropped[0].turn
            self._barged_in.add(turn)
            heard_text = " ".join(s.text for s in self.segments.get(turn, []) if s.heard)
            self.emit(
                BargeIn(
                    t=trio.current_time(), turn=turn, heard_text=heard_text, interim_text=interim
                )
            )
            self.log.info("barge-in on turn %d; heard: %r", turn, heard_text)

    # ================================================================== DTMF, silence, limits

    def _dtmf_digit(self, digit: str) -> None:
        self._mark_activity()
        self._reprompts = 0
        self.emit(DtmfReceived(t=trio.current_time(), turn=self._turn_no(), digit=digit))
        agent = self.runtime.config.agent
        if self._main_nursery is None:
            return
        if agent.transfer_digit and digit == agent.transfer_digit and agent.transfer_number:
            self._main_nursery.start_soon(
                self._guard, self.transfer, "telephony", agent.transfer_number, None
            )
            return
        self._dtmf.append(digit)
        if self._dtmf_scope is not None:
            self._dtmf_scope.cancel()
        self._main_nursery.start_soon(self._dtmf_turn, 0 if digit == "#" else DTMF_GAP_S)

    async def _dtmf_turn(self, delay: float) -> None:
        with trio.CancelScope() as scope:
            self._dtmf_scope = scope
            await trio.sleep(delay)
            digits, self._dtmf = self._dtmf, []
            self._dtmf_scope = None
            if not digits:
                return
            now = trio.current_time()
            text = f"[The caller pressed the keys: {' '.join(digits)}]"
            await self._user_turn(text, "dtmf", TurnTiming(speech_end=now, turn_end=now))

    def _mark_activity(self) -> None:
        self._last_activity = trio.current_time()
        self._activity.set()
        self._activity = trio.Event()

    async def _silence_watchdog(self) -> None:
        while True:
            idle = not (self._agent_busy() or self._user_speaking or self._pending_turn)
            deadline = self._last_activity + self.policy.silence_reprompt_s if idle else math.inf
            with trio.move_on_at(deadline) as scope:
                await self._activity.wait()
            if not scope.cancelled_caught:
                continue
            if self._reprompts >= self.policy.max_reprompts:
                await self.finish("silence")
                return
            self._reprompts += 1
            reprompt = self.runtime.config.agent.reprompt
            turn = self._new_turn("agent", reprompt)  # its own turn: not part of an answer
            self.emit(Reprompted(t=trio.current_time(), turn=turn, count=self._reprompts))
            message = Message(role="assistant", content=reprompt)
            self.history.append(message)
            await self.play_phrase(reprompt, turn, message)

    async def _max_duration(self) -> None:
        await trio.sleep(self.policy.max_call_s)
        self.log.info("maximum call length reached")
        await self.finish("max_duration")

    # ================================================================== CallControl (tools)

    # Both wait until the caller heard the words; a hang-up in the middle wakes them
    # (see `_leg_gone`), so a caller who is gone never holds the call's slot.

    async def end_call(self, goodbye: str | None = None) -> None:
        seg = await self.speak(goodbye or self.runtime.config.agent.goodbye, self._turn_no())
        await seg.heard_event.wait()
        self._end("agent_hangup")

    async def transfer(self, number: str, announcement: str | None = None) -> None:
        seg = await self.speak(
            announcement or self.runtime.config.agent.transfer_announcement, self._turn_no()
        )
        await seg.heard_event.wait()
        if not self._leg_alive:
            self.log.info("not transferring: the caller hung up during the announcement")
            return
        # Kept before the redirect: if nobody answers, the caller comes back on a new
        # leg of this call (`Runtime.handoffs`), which may start before this one ended.
        self.runtime.handoffs.keep(self.info, self.history)
        await self.leg.transfer(number)
        self.log.info("transferred to %s", number)
        self._end("transferred", hangup=False)

    # ================================================================== records

    def emit(self, event: CallEvent) -> None:
        self.runtime.notify(self.info, event)

    def add_usage(self, event: UsageReported) -> None:
        self._count("llm_prompt_tokens", event.prompt_tokens)
        self._count("llm_completion_tokens", event.completion_tokens)
        self._count("llm_cached_tokens", event.cached_tokens)
        self.emit(event)

    def _count(self, key: str, amount: float) -> None:
        self.usage[key] = self.usage.get(key, 0) + amount

    def tool_finished(self, event: ToolCallFinished, arguments: str) -> None:
        self.emit(event)
        self.turns[event.turn].tool_calls.append(
            ToolCallRecord(
                call_id=event.call_id,
                tool=event.tool,
                arguments=arguments,
                ok=event.ok,
                result=event.result,
                error=event.error,
                latency_ms=event.latency_ms,
            )
        )

    def _turn_no(self) -> int:
        return len(self.turns) - 1

    def _new_turn(self, role: str, text: str) -> int:
        now = time.time()
        self.turns.append(
            TurnRecord(index=len(self.turns), role=role, text=text, started=now, ended=now)
        )
        return len(self.turns) - 1

    def _close_agent_turn(self) -> None:
        """The agent's latest turn is over: fill in its texts and report its latencies."""
        for record in self.turns:
            if record.role != "agent" or record.metrics or record.index not in self._agent_timing:
                continue
            segs = self.segments.get(record.index, [])
            record.text = " ".join(s.text for s in segs) or record.text
            record.heard_text = " ".join(s.text for s in segs if s.heard)
            record.interrupted = record.index in self._barged_in
            record.ended = time.time()
            timing = self._agent_timing.pop(record.index)
            record.metrics = timing.metrics(self.runtime.loop_lag.for_turns())
            if record.metrics:
                self.emit(
                    TurnMetrics(t=trio.current_time(), turn=record.index, metrics=record.metrics)
                )

    def _record(self) -> CallRecord:
        self._close_agent_turn()
        for record in self.turns:
            if record.role == "agent" and record.heard_text is None:
                segs = self.segments.get(record.index, [])
                record.heard_text = " ".join(s.text for s in segs if s.heard)
                record.interrupted = record.index in self._barged_in
        stt_seconds = self._audio_bytes / SAMPLE_RATE
        self._count("stt_seconds", round(stt_seconds, 3))
        ended = time.time()
        self._count("telephony_seconds", round(ended - self._started_wall, 3))
        if stt_seconds:
            self.emit(
                UsageReported(
                    t=trio.current_time(),
                    turn=self._turn_no(),
                    provider=f"stt/{self.runtime.provider_names['stt']}",
                    seconds=round(stt_seconds, 3),
                )
            )
        return CallRecord(
            call_id=self.info.call_id,
            provider_call_id=self.info.provider_call_id,
            from_number=self.info.from_number,
            to_number=self.info.to_number,
            started=self._started_wall,
            ended=ended,
            # A drain that had to cancel the call before its goodbye ended still ended it.
            end_reason=self.end_reason or ("shutdown" if self._shutdown_requested else "unknown"),
            providers=dict(self.runtime.provider_names),
            turns=self.turns,
            usage=dict(self.usage),
            extra=(
                {
                    "resumed_from": self.resumed.info.call_id,
                    "transfer_outcome": self.resumed.outcome,
                }
                if self.resumed
                else {}
            ),
        )


class _CallResponse:
    """One response of the call as `respond()` sees it (a `ResponseSink`): its sentences
    go to the speaker, its usage and tool calls to the call's records."""

    def __init__(self, session: CallSession, turn: int, timing: TurnTiming) -> None:
        self._session = session
        self.turn = turn
        self.timing = timing
        self.history = session.history

    async def say(self, text: str, message: Message) -> None:
        await self._session.say(text, self.turn, message, self.timing)

    async def phrase(self, name: PhraseName, message: Message | None = None) -> None:
        if name == "filler":
            await self._session.filler(self.turn)
            return
        line = self._session.runtime.config.agent.fallback_line
        if message is not None:
            message.content = line
        await self._session.play_phrase(line, self.turn, message)

    def filler_unless(self, delay: float, answered: trio.Event) -> None:
        self._session.filler_unless(delay, self.turn, answered)

    def usage(self, usage: Usage) -> None:
        session = self._session
        session.add_usage(
            UsageReported(
                t=trio.current_time(),
                turn=self.turn,
                provider=f"llm/{session.runtime.provider_names['llm']}",
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
            )
        )

    def llm_failed(self, error: ProviderError) -> None:
        self._session.llm_failed(error)

    def tool_started(self, request: ToolCallRequest) -> None:
        self._session._tools_running += 1
        self._session.emit(
            ToolCallStarted(
                t=trio.current_time(),
                turn=self.turn,
                call_id=request.id,
                tool=request.name,
                arguments=request.arguments,
            )
        )

    def tool_finished(self, request: ToolCallRequest, outcome: ToolOutcome) -> None:
        self._session._tools_running = max(0, self._session._tools_running - 1)
        self._session.tool_finished(
            ToolCallFinished(
                t=trio.current_time(),
                turn=self.turn,
                call_id=request.id,
                tool=request.name,
                ok=outcome.ok,
                result=outcome.result,
                error=outcome.error,
                latency_ms=round(outcome.latency_ms, 3),
            ),
            request.arguments,
        )
