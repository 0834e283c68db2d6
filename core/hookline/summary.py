"""The post-call summary: one LLM request per finished call, out of the call's path.

When a call ends, the runtime hands its record to the `SummaryWriter` (`submit`, never
blocks). A few workers (`[summary] concurrency`) in the runtime's background nursery
(`Runtime.run_background`, started by `hookline serve`) each take the next record, ask
the configured LLM (no tools) for a short summary and the fields a shop wants, as JSON,
and write one `call_summaries` row: `done`, or `skipped` with the reason (no caller
turns, the LLM failed or timed out, the answer was not the JSON asked for, too long, the
backlog was full, the process stopped). A request is bounded in time (`timeout_s`), in
output (`max_tokens`) and in input (`max_transcript_chars`).

Then `SummaryWriter.on_done(payload)` receives the `call.completed` payload
(`call_completed_payload`): transcript, summary, fields, bookings, notifications. That
method is the one place where the payload leaves this module: it is enqueued on the
outbox's signed webhook.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio

from .config import SummaryConfig
from .events import CallRecord, ToolCallRecord
from .logs import call_log
from .providers import CallInfo, Message, TextDelta, Usage

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "BOOKING_TOOLS",
    "NOTIFICATION_TOOLS",
    "CallCompleted",
    "CallSummary",
    "SummaryFields",
    "SummaryWriter",
    "build_messages",
    "call_completed_payload",
    "parse_summary",
]

log = logging.getLogger("hookline.summary")

# Tools whose successful calls are bookings (by action) and notifications for the shop.
BOOKING_TOOLS = {
    "book_appointment": "booked",
    "reschedule_appointment": "rescheduled",
    "cancel_appointment": "cancelled",
}
NOTIFICATION_TOOLS = {"take_message": "message", "request_tow": "tow_request"}
CHARS_PER_TOKEN = 4  # the usual estimate for English text

Sentiment = Literal["positive", "neutral", "negative"]

INSTRUCTIONS = """\
You summarise phone calls to {shop} for the shop's staff. Read the transcript and answer \
with one JSON object and nothing else, with these keys:
"summary": two or three sentences on what the caller wanted and what happened;
"reason_for_calling": a few words;
"outcome": a few words (e.g. "appointment booked", "message taken", "question answered");
"vehicle": year, make and model if mentioned, else null;
"follow_up_needed": true if someone at the shop must act (call back, confirm, dispatch);
"follow_up": what must be done, else null;
"sentiment": the caller's mood, one of "positive", "neutral", "negative".
"""


class SummaryFields(msgspec.Struct, kw_only=True):
    """What the model answers (decoded from its JSON; extra keys are ignored)."""

    summary: str
    reason_for_calling: str | None = None
    outcome: str | None = None
    vehicle: str | None = None
    follow_up_needed: bool = False
    follow_up: str | None = None
    sentiment: Sentiment | None = None


class CallSummary(msgspec.Struct, kw_only=True):
    """One call's summary result, as stored: `done` with fields, or `skipped` with why."""

    call_id: str
    status: Literal["done", "skipped"]
    reason: str | None = None
    fields: SummaryFields | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None


class TranscriptLine(msgspec.Struct, kw_only=True):
    role: Literal["user", "agent"]
    text: str
    interrupted: bool = False


class Booking(msgspec.Struct, kw_only=True):
    action: str  # "booked" | "rescheduled" | "cancelled"
    tool: str
    arguments: Any
    result: str


class Notification(msgspec.Struct, kw_only=True):
    kind: str  # "message" | "tow_request"
    tool: str
    arguments: Any
    result: str


class CallCompleted(msgspec.Struct, kw_only=True):
    """The `call.completed` payload (a signed webhook to the shop's systems)."""

    event: Literal["call.completed"] = "call.completed"
    call_id: str
    provider_call_id: str
    from_number: str
    to_number: str
    started: float  # UNIX seconds
    ended: float
    duration_s: float
    end_reason: str
    transcript: list[TranscriptLine]
    summary_status: Literal["done", "skipped"] | None = None
    summary_skipped_reason: str | None = None
    summary: SummaryFields | None = None
    bookings: list[Booking] = []
    notifications: list[Notification] = []


_decode_fields = msgspec.json.Decoder(SummaryFields).decode
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_summary(text: str) -> SummaryFields:
    """The model's answer as fields; code fences (```json ... ```) are tolerated.
    Raises ValueError with a one-line reason when it is not the JSON asked for."""
    body = text.strip()
    if m := _FENCE.match(body):
        body = m.group(1).strip()
    if not body.startswith("{") and "{" in body:  # a sentence before the object
        body = body[body.index("{") : body.rindex("}") + 1]
    try:
        fields = _decode_fields(body)
    except msgspec.DecodeError as e:
        raise ValueError(f"not the JSON asked for: {e}") from None
    if not fields.summary.strip():
        raise ValueError("the summary is empty")
    return fields


def _transcript(record: CallRecord) -> list[TranscriptLine]:
    lines = []
    for turn in record.turns:
        said = turn.heard_text if turn.role == "agent" and turn.interrupted else turn.text
        if said and said.strip() and turn.role in ("user", "agent"):
            lines.append(
                TranscriptLine(role=turn.role, text=said.strip(), interrupted=turn.interrupted)  # type: ignore[arg-type]
            )
    return lines


def build_messages(
    record: CallRecord, *, shop: str, max_transcript_chars: int
) -> list[Message] | None:
    """The request for one call; None when the caller said nothing (nothing to summarise)."""
    lines = _transcript(record)
    if not any(line.role == "user" for line in lines):
        return None
    text = "\n".join(
        f"{'Caller' if line.role == 'user' else 'Agent'}: {line.text}" for line in lines
    )
    if len(text) > max_transcript_chars:  # keep the end: how the call ended matters most
        text = "[...]\n" + text[-max_transcript_chars:]
    actions = [
        f"- {tc.tool}({tc.arguments}) -> {'ok' if tc.ok else 'failed'}"
        for tc in _tool_calls(record)
    ]
    if actions:
        text += "\n\nTools the agent used:\n" + "\n".join(actions)
    return [
        Message(role="system", content=INSTRUCTIONS.format(shop=shop)),
        Message(role="user", content=f"Transcript (ended: {record.end_reason}):\n{text}"),
    ]


def _tool_calls(record: CallRecord) -> list[ToolCallRecord]:
    return [tc for turn in record.turns for tc in turn.tool_calls]


def _arguments(raw: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def call_completed_payload(record: CallRecord, summary: CallSummary | None) -> CallCompleted:
    """The `call.completed` payload of a finished call and its summary (if any)."""
    bookings, notifications = [], []
    for tc in _tool_calls(record):
        if not tc.ok:
            continue
        if action := BOOKING_TOOLS.get(tc.tool):
            bookings.append(
                Booking(
                    action=action, tool=tc.tool, arguments=_arguments(tc.arguments),
                    result=tc.result,
                )
            )  # fmt: skip
        elif kind := NOTIFICATION_TOOLS.get(tc.tool):
            notifications.append(
                Notification(
                    kind=kind, tool=tc.tool, arguments=_arguments(tc.arguments),
                    result=tc.result,
                )
            )  # fmt: skip
    return CallCompleted(
        call_id=record.call_id,
        provider_call_id=record.provider_call_id,
        from_number=record.from_number,
        to_number=record.to_number,
        started=record.started,
        ended=record.ended,
        duration_s=round(max(0.0, record.ended - record.started), 3),
        end_reason=record.end_reason,
        transcript=_transcript(record),
        summary_status=summary.status if summary else None,
        summary_skipped_reason=summary.reason if summary and summary.status == "skipped" else None,
        summary=summary.fields if summary else None,
        bookings=bookings,
        notifications=notifications,
    )


class _Skip(Exception):
    """The summary is skipped; the message is the reason stored."""


class SummaryWriter:
    """Owns the summary queue and its workers for one runtime."""

    def __init__(self, runtime: Runtime, config: SummaryConfig) -> None:
        self.runtime = runtime
        self.config = config
        self._send: trio.MemorySendChannel[tuple[CallInfo, CallRecord]] | None = None
        self.done: list[CallSummary] = []  # the last few results, newest last (for tests)
        self.idle = trio.Event()
        self.idle.set()
        self._pending = 0

    # ------------------------------------------------------------ the call's side

    def submit(self, info: CallInfo, record: CallRecord) -> None:
        """Queue a finished call for its summary; never blocks, never raises."""
        if record.end_reason.startswith("rejected"):
            return  # never answered: nothing said, and no one to tell
        if self._send is None:
            log.debug("no summary for call %s: the background workers are not running",
                      record.call_id)  # fmt: skip
            return
        try:
            self._send.send_nowait((info, record))
        except trio.WouldBlock:
            self._store(
                record, CallSummary(call_id=record.call_id, status="skipped", reason="backlog full")
            )
            return
        except trio.ClosedResourceError:
            self._store(
                record, CallSummary(call_id=record.call_id, status="skipped", reason="shutdown")
            )
            return
        if self._pending == 0:
            self.idle = trio.Event()
        self._pending += 1

    # ------------------------------------------------------------ the workers

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until `close()`; summaries queued by then are finished first.
        Cancelled, the ones in progress are stored as skipped ("shutdown")."""
        send, receive = trio.open_memory_channel[tuple[CallInfo, CallRecord]](self.config.backlog)
        self._send = send
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.concurrency):
                    nursery.start_soon(self._worker, receive.clone())
                receive.close()
                task_status.started()
        finally:
            self._send = None

    def close(self) -> None:
        """No more calls: the workers finish the queue, then `run` returns."""
        if self._send is not None:
            self._send.close()

    async def _worker(
        self, receive: trio.MemoryReceiveChannel[tuple[CallInfo, CallRecord]]
    ) -> None:
        async with receive:
            async for info, record in receive:
                try:
                    await self.summarize(info, record)
                finally:
                    self._pending -= 1
                    if self._pending == 0:
                        self.idle.set()

    async def summarize(self, info: CallInfo, record: CallRecord) -> CallSummary:
        """One call's summary: asked, stored, handed to `on_done`. Never raises (but a
        cancellation, after storing the call as skipped)."""
        clog = call_log(log, record.call_id)
        started = time.monotonic()
        result = CallSummary(call_id=record.call_id, status="skipped", model=self._model())
        try:
            with trio.fail_after(self.config.timeout_s):
                await self._ask(info, record, result)
        except _Skip as e:
            result.reason = str(e)
        except trio.TooSlowError:
            result.reason = f"the LLM took over {self.config.timeout_s:g} s"
        except trio.Cancelled:
            result.reason = "shutdown"
            self._store(record, result)
            raise
        except Exception as e:  # ProviderError or anything else: skipped, with why
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            result.reason = f"the LLM failed: {type(e).__name__}: {first}"[:500]
        result.latency_ms = round((time.monotonic() - started) * 1000, 1)
        if result.status == "done":
            clog.info("summary written (%.0f ms)", result.latency_ms)
        else:
            clog.info("summary skipped: %s", result.reason)
        self._store(record, result)
        try:
            await self.on_done(call_completed_payload(record, result))
        except Exception:
            clog.exception("the call.completed payload could not be handed on")
        return result

    async def _ask(self, info: CallInfo, record: CallRecord, result: CallSummary) -> None:
        messages = build_messages(
            record,
            shop=self.runtime.config.agent.name,
            max_transcript_chars=self.config.max_transcript_chars,
        )
        if messages is None:
            raise _Skip("no caller turns")
        max_chars = self.config.max_tokens * CHARS_PER_TOKEN
        parts: list[str] = []
        size = 0
        async with self.runtime.llm.stream(messages, [], info) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    size += len(event.text)
                    if size > max_chars:
                        raise _Skip(f"the answer ran over {self.config.max_tokens} tokens")
                elif isinstance(event, Usage):
                    result.prompt_tokens += event.prompt_tokens
                    result.completion_tokens += event.completion_tokens
                else:
                    raise _Skip("the LLM called a tool instead of answering")
        try:
            result.fields = parse_summary("".join(parts))
        except ValueError as e:
            raise _Skip(str(e)) from None
        result.status = "done"

    # ------------------------------------------------------------ results

    async def on_done(self, payload: CallCompleted) -> None:
        """THE place a finished call's `call.completed` payload leaves this module (with
        its summary, or why there is none): enqueued on the outbox's signed webhook
        (`[notifications.webhook]`; nothing is stored when it is not configured), once
        per call. Runs in the summary worker, not in any call."""
        await self.runtime.outbox.enqueue(
            key=f"call:{payload.call_id}:completed",
            channel="webhook",
            payload=msgspec.to_builtins(payload),
            kind="call.completed",
            call_id=payload.call_id,
        )

    def _model(self) -> str | None:
        model = getattr(self.runtime.resolved.provider_settings.get("llm"), "model", None)
        return model if isinstance(model, str) else None

    def _store(self, record: CallRecord, result: CallSummary) -> None:
        self.done = [*self.done[-99:], result]
        from .analytics.plugin import sink_for

        sink = sink_for(self.runtime)
        if sink is None:
            return
        sink.writer.call_summary(sink.shaper.summary_row(record, result))
