"""Each call becomes one OpenTelemetry trace: whole scripted calls through the real call
engine, spans read back from the SDK's in-memory exporter or from a loopback OTLP/HTTP
receiver that decodes what the real exporter sends."""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
from collections.abc import Iterator, Sequence

import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hookline_otel
from hookline import ToolContext, ToolSet, tool
from hookline.analytics.rows import hash_number
from hookline.events import CallRecord
from hookline.hookspecs import hookimpl
from hookline.testing.harness import make_config, run_call, scripted_runtime
from hookline.testing.scripted import (
    HangUpStep,
    Reply,
    Say,
    ScriptedLeg,
    ScriptedLLM,
    ScriptedSTT,
    WaitForAgent,
    call_info,
)
from hookline_otel import OtelSettings, attach, tracing_for
from hookline_otel.spans import STAGES

CALLER = "+15551230000"
SALT = "pepper"
SAID = "my number is 555 123 0000"
ANSWER = "I have you as Ada at (555) 123-0000."
OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "HOOKLINE_OTEL_TRANSCRIPTS",
)


class Lookup(msgspec.Struct):
    phone: str


@tool
async def find_customer(params: Lookup, ctx: ToolContext) -> dict:
    """The customer record for a phone number."""
    return {"name": "Ada Lovelace", "phone": "+1 (555) 123-0000"}


class CustomerTools:
    @hookimpl
    def hookline_toolsets(self):
        return [ToolSet(name="customers", create=lambda settings, rt: [find_customer])]


class ThreadNotingExporter(InMemorySpanExporter):
    """The in-memory exporter, noting which thread each export ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.threads.append(threading.current_thread().name)
        return super().export(spans)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Whatever the machine's environment says, these tests choose the OTEL variables."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


async def one_call(
    *,
    numbers: str = "plain",
    settings: OtelSettings | None = None,
    exporter=None,
    processor: SpanProcessor | None = None,
) -> tuple[CallRecord, object]:
    """A call with a tool round: the caller gives a number, the agent looks it up and
    answers. With `settings`, traced into `exporter`; else the plugin's own start-up
    path (the environment) decides. Returns the record and the runtime (stopped)."""
    stt = ScriptedSTT()
    llm = ScriptedLLM([Reply(tool_calls=[("find_customer", '{"phone": "555-123-0000"}')]), ANSWER])
    config = make_config(
        providers={"tools": ["builtin", "customers"]}, analytics={"caller_numbers": numbers}
    )
    runtime = await scripted_runtime(
        config, stt=stt, llm=llm, plugins=[hookline_otel, CustomerTools()], start=False
    )
    if settings is not None:
        tracing = attach(runtime, settings, exporter)
        if processor is not None:
            tracing.provider.add_span_processor(processor)
    await runtime.start()
    script = [WaitForAgent(), Say(SAID), WaitForAgent(timeout=60), HangUpStep()]
    record = await run_call(runtime, ScriptedLeg(call_info(from_number=CALLER), script, stt))
    runtime.stop()  # hookline_runtime_stopping: the processor sends what is queued
    return record, runtime


async def traced(**kw) -> tuple[CallRecord, list[ReadableSpan], ThreadNotingExporter]:
    exporter = ThreadNotingExporter()
    settings = OtelSettings(
        endpoint="http://127.0.0.1:9/v1/traces",
        include_transcripts=kw.pop("transcripts", False),
    )
    record, _ = await one_call(settings=settings, exporter=exporter, **kw)
    return record, list(exporter.get_finished_spans()), exporter


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    found = [
        s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]
    return sorted(found, key=lambda s: (s.start_time, s.name))


def everything_said(spans: list[ReadableSpan]) -> str:
    """Every attribute value and span-event attribute value, as one text."""
    parts: list[str] = []
    for s in spans:
        parts.extend(f"{k}={v}" for k, v in (s.attributes or {}).items())
        for ev in s.events:
            parts.extend(f"{k}={v}" for k, v in (ev.attributes or {}).items())
        parts.append(s.status.description or "")
    return "\n".join(parts)


def leaks_number(text: str) -> bool:
    return "5551230000" in re.sub(r"[\s().+\-]", "", text)


def ms(span: ReadableSpan) -> float:
    return (span.end_time - span.start_time) / 1e6


async def test_a_call_is_one_trace_of_turns_stages_and_tools(autojump_clock):
    record, spans, exporter = await traced()
    assert record.end_reason == "caller_hangup"

    # One trace, one root; every other span hangs off a span of the same trace.
    roots = [s for s in spans if s.parent is None]
    assert [r.name for r in roots] == ["call"]
    root = roots[0]
    ids = {s.context.span_id for s in spans}
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert all(s.parent.span_id in ids for s in spans if s.parent is not None)

    # A span per turn, in the record's order: greeting, the caller, the answer.
    turns = children(spans, root)
    assert [t.name for t in turns] == [f"{t.role} turn" for t in record.turns]
    assert [t.attributes["hookline.turn.index"] for t in turns] == [t.index for t in record.turns]
    user, answer = turns[1], turns[2]
    assert user.attributes["hookline.turn.end"] == "speech_final"

    # Under the answer: a span per latency stage and one for the tool call.
    below = children(spans, answer)
    names = {s.name for s in below}
    assert names == {*STAGES, "execute_tool find_customer"}
    stage = {s.name: s for s in below}
    metrics = record.turns[2].metrics
    for name in STAGES:
        key = "end_of_turn_delay" if name == "end_of_turn" else name
        assert stage[name].attributes["hookline.latency_ms"] == metrics[key]
        assert ms(stage[name]) == pytest.approx(metrics[key], abs=0.01)
    # Stages measured from the caller's speech end start together there; the first TTS
    # byte ends with the first audio (the end of voice-to-voice).
    v2v = stage["voice_to_voice"]
    assert stage["stt_final"].start_time == v2v.start_time == stage["end_of_turn"].start_time
    assert stage["tts_first_byte"].end_time == v2v.end_time
    assert stage["llm_first_token"].start_time == stage["end_of_turn"].end_time
    assert answer.start_time == v2v.start_time < user.end_time  # it answers that speech

    tool_span = stage["execute_tool find_customer"]
    (tool_record,) = record.turns[2].tool_calls
    assert tool_span.attributes["gen_ai.tool.name"] == "find_customer"
    assert tool_span.attributes["gen_ai.tool.call.id"] == tool_record.call_id
    assert tool_span.attributes["hookline.tool.ok"] is True
    assert ms(tool_span) == pytest.approx(tool_record.latency_ms, abs=0.01)

    # Wall-clock placement: the root starts at the record's wall-clock start and every
    # span of the call lies inside it (one clock offset for the whole call).
    assert root.start_time == round(record.started * 1e9)
    for s in spans:
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time, s.name

    # Ids and outcome on the root.
    a = root.attributes
    assert a["hookline.call.id"] == record.call_id
    assert a["hookline.call.provider_call_id"] == record.provider_call_id
    assert a["hookline.call.end_reason"] == "caller_hangup"
    assert a["hookline.call.from"] == CALLER  # "plain": as the logs and the database show it
    assert a["hookline.provider.llm"] == "scripted"
    assert a["hookline.usage.llm_prompt_tokens"] == record.usage["llm_prompt_tokens"] > 0
    assert a["hookline.cost.total_usd"] > 0
    assert answer.attributes["hookline.usage.llm_prompt_tokens"] > 0

    # The export ran on the batch processor's own thread, never on the trio thread.
    assert exporter.threads and set(exporter.threads) == {"OtelBatchSpanRecordProcessor"}
    assert threading.current_thread().name not in exporter.threads


async def test_no_transcripts_by_default(autojump_clock):
    _, spans, _ = await traced()
    text = everything_said(spans)
    assert "hookline.transcript" not in text and "gen_ai.tool.call.arguments" not in text
    for words in ("my number is", "Ada", "Thanks for calling", "555-123-0000"):
        assert words not in text


async def test_transcripts_when_configured(autojump_clock):
    record, spans, _ = await traced(transcripts=True)
    root = next(s for s in spans if s.parent is None)
    greeting, user, answer = children(spans, root)
    assert user.attributes["hookline.transcript"] == SAID
    assert greeting.attributes["hookline.transcript"] == record.turns[0].text
    assert answer.attributes["hookline.transcript"] == record.turns[2].text == ANSWER
    assert answer.attributes["hookline.transcript.heard"] == record.turns[2].heard_text
    tool_span = next(s for s in children(spans, answer) if s.name.startswith("execute_tool"))
    assert tool_span.attributes["gen_ai.tool.call.arguments"] == '{"phone": "555-123-0000"}'
    assert "Ada Lovelace" in tool_span.attributes["gen_ai.tool.call.result"]


async def test_no_clear_caller_number_when_hashed(autojump_clock, monkeypatch):
    monkeypatch.setenv("HOOKLINE_HASH_SALT", SALT)
    # Transcripts on, so the number is said, typed into a tool and returned by it.
    record, spans, _ = await traced(numbers="hashed", transcripts=True)
    text = everything_said(spans)
    assert not leaks_number(text), text
    root = next(s for s in spans if s.parent is None)
    digest = hash_number(CALLER, SALT.encode())
    assert root.attributes["hookline.call.from"] == f"#{digest[:12]}"  # as the log shows it
    # What was said around the number is kept: only the number goes.
    user = children(spans, root)[1]
    assert user.attributes["hookline.transcript"].startswith("my number is ")
    assert record.from_number == CALLER  # the record itself still had it


class BrokenExporter(InMemorySpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector exploded")


async def test_a_failing_exporter_logs_and_the_call_goes_on(autojump_clock, caplog):
    caplog.set_level(logging.INFO)
    settings = OtelSettings(endpoint="http://127.0.0.1:9/v1/traces")
    record, runtime = await one_call(settings=settings, exporter=BrokenExporter())
    assert record.end_reason == "caller_hangup"
    assert [t.text for t in record.turns][1:] == [SAID, ANSWER]
    assert tracing_for(runtime) is None  # stopped and detached all the same
    failures = [r for r in caplog.records if "collector exploded" in str(r.exc_info)]
    assert failures and failures[0].threadName == "OtelBatchSpanRecordProcessor"


async def test_a_trace_that_cannot_be_built_logs_and_the_call_goes_on(
    autojump_clock, caplog, monkeypatch
):
    def broken(*args, **kwargs):
        raise ValueError("span builder bug")

    monkeypatch.setattr(hookline_otel, "emit_trace", broken)
    exporter = InMemorySpanExporter()
    record, _ = await one_call(
        settings=OtelSettings(endpoint="http://127.0.0.1:9/v1/traces"), exporter=exporter
    )
    assert record.end_reason == "caller_hangup" and len(record.turns) == 3
    assert any("could not build the call's trace" in r.getMessage() for r in caplog.records)
    assert exporter.get_finished_spans() == ()


class ThreadNotingProcessor(SpanProcessor):
    def __init__(self) -> None:
        self.threads: set[str] = set()

    def on_end(self, span: ReadableSpan) -> None:
        self.threads.add(threading.current_thread().name)


async def test_spans_are_built_off_the_trio_thread(autojump_clock):
    noting = ThreadNotingProcessor()
    await one_call(
        settings=OtelSettings(endpoint="http://127.0.0.1:9/v1/traces"),
        exporter=InMemorySpanExporter(),
        processor=noting,
    )
    assert noting.threads == {"hookline-otel-spans"}


async def test_a_rejected_call_is_a_root_span_alone(autojump_clock):
    exporter = InMemorySpanExporter()
    runtime = await scripted_runtime(plugins=[hookline_otel])
    attach(runtime, OtelSettings(endpoint="http://127.0.0.1:9/v1/traces"), exporter)
    record = runtime.record_rejected(call_info(from_number=CALLER), "busy")
    runtime.stop()
    (span,) = exporter.get_finished_spans()
    assert span.name == "call" and span.parent is None
    assert span.attributes["hookline.call.end_reason"] == record.end_reason == "rejected:busy"
    assert span.attributes["hookline.call.id"] == record.call_id


async def test_an_unreachable_collector_logs_and_the_call_goes_on(
    autojump_clock, caplog, monkeypatch
):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")  # the exporter's retry budget
    caplog.set_level(logging.INFO)
    record, runtime = await one_call()
    assert record.end_reason == "caller_hangup"
    assert [t.text for t in record.turns][1:] == [SAID, ANSWER]
    assert tracing_for(runtime) is None
    failed = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
    assert failed and all(r.threadName == "OtelBatchSpanRecordProcessor" for r in failed)


async def test_idle_without_an_endpoint(autojump_clock):
    _, runtime = await one_call()
    assert tracing_for(runtime) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/t", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"},
         "http://c/t"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)  # fmt: skip
def test_settings_from_the_standard_variables(environ, expected):
    settings = OtelSettings.from_environ(environ.get)
    assert (settings and settings.endpoint) == expected
    if settings:
        assert settings.include_transcripts is False
        assert settings.headers_env == "OTEL_EXPORTER_OTLP_HEADERS"


# ------------------------------------------------------------ a real OTLP/HTTP export


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Accepts POST /v1/traces with an OTLP protobuf body, as a collector does."""

    requests: list[tuple[dict[str, str], ExportTraceServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.received.append((dict(self.headers), request))  # type: ignore[attr-defined]
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_one_export_reaches_an_otlp_http_receiver(autojump_clock, collector, monkeypatch):
    # The deployment path: only the standard variables, the plugin's own start-up hook.
    host, port = collector.server_address
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host}:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20sekret")
    record, runtime = await one_call()
    assert tracing_for(runtime) is None  # shut down by hookline_runtime_stopping
    assert collector.received, "nothing reached the receiver"
    headers = {k.lower(): v for h, _ in collector.received for k, v in h.items()}
    assert headers["authorization"] == "Bearer sekret"
    names: list[str] = []
    service: set[str] = set()
    for _, request in collector.received:
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    service.add(attr.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names.extend(span.name for span in scope_spans.spans)
    assert service == {"hookline"}
    assert sorted(names) == sorted([
        "call", "agent turn", "user turn", "agent turn", *STAGES, "execute_tool find_customer",
    ])  # fmt: skip
    call_ids = {
        a.value.string_value
        for _, request in collector.received
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
        for a in span.attributes
        if a.key == "hookline.call.id"
    }
    assert call_ids == {record.call_id}
