"""The OpenAI chat completions provider: `OpenAILLM.stream(messages, tools)`.

AsyncOpenAI runs natively under trio (its transport is anyio-based). The SDK sends the
request, authenticates and raises typed status errors; we read the SSE body ourselves and
decode every chunk with a typed msgspec decoder. The SDK's own retries are off
(max_retries=0), so they never stack on ours: the core's `retry` retries what the error
says is retryable (429 honouring retry-after, 408/409/5xx, connection errors, or what the
server's x-should-retry says), but only while the caller's silence stays within
`max_retry_wait_s`, so the bound is ours. Timeouts are trio deadlines, not the SDK's.

Every failure leaves as one of hookline's provider errors (ProviderAuthError,
ProviderUnavailable, ProviderTimeout, ProviderProtocolError, or ProviderError for a
request the server refused), so the engine's fallback policy applies.
"""

from __future__ import annotations

import importlib
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import msgspec
import openai
import trio

from hookline import (
    Backoff,
    CallInfo,
    LLMEvent,
    Message,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    Usage,
    call_log,
    error_for_status,
    parse_retry_after,
    retry,
)

from .history import trim_history
from .settings import OpenAISettings
from .wire import Chunk, SSEParser, decode_chunk, wire_message, wire_tools

__all__ = ["OpenAILLM"]

log = logging.getLogger("hookline.llm.openai")

PROVIDER = "llm/openai"
# 0.5 s doubling up to 8 s, jittered so calls that failed together do not retry in step;
# the server's retry-after is obeyed whole: the silence budget is the real bound.
_BACKOFF = Backoff(first_s=0.5, max_s=8.0, jitter=0.25, max_retry_after_s=math.inf)
_CLOSE_BOUND_S = 2.0  # closing a response never holds a cancelled response longer
_DRAIN_BOUND_S = 0.2  # after [DONE], how long we wait for the body's end (connection reuse)


def _pool_limits(keepalive_s: float) -> Any:
    """The SDK's connection limits, with idle connections kept `keepalive_s`.

    A call's requests are seconds apart (the caller speaks, the answer plays), longer
    than the HTTP stack's 5 s default keep-alive, which would cost nearly every turn a new
    TCP and TLS handshake (round trips before the first token, handshake CPU on the thread
    that carries every call's audio). A server that closes an idle connection first is
    seen by the pool when it hands the connection out (the socket reads as closed: it is
    discarded, a new one opened); a close that races a request fails that attempt with
    a connection error, which `retry` retries (after its first backoff wait) within
    `max_retry_wait_s`.

    Every connection may stay pooled (keep-alive = the SDK's connection limit, not its
    100): turns of concurrent calls come in bursts, and above 100 in flight the surplus
    would otherwise be closed after each burst and handshaken again on the next.
    """
    default = openai.DEFAULT_CONNECTION_LIMITS
    # The SDK's own Limits class (httpx2's in openai 3.x, httpx's before).
    return type(default)(
        max_connections=default.max_connections,
        max_keepalive_connections=default.max_connections,
        keepalive_expiry=keepalive_s,
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What the SDK's HTTP stack raises when a connection breaks mid-body (it uses httpx2
    in openai 3.x and httpx before; both may be installed)."""
    errors: list[type[BaseException]] = [ssl.SSLError, anyio.EndOfStream, anyio.BrokenResourceError]
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(module.RequestError)
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()


class OpenAILLM:
    """One per process. Owns one AsyncOpenAI client (so connections are reused across
    responses and calls), built by `prepare()` at start-up; `aclose()` releases it."""

    def __init__(
        self,
        settings: OpenAISettings,
        *,
        api_key: str,
        first_token_timeout_s: float,
        thread_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.first_token_timeout_s = first_token_timeout_s
        self._api_key = api_key
        self._thread_limiter = thread_limiter
        self._client: openai.AsyncOpenAI | None = None
        self._client_token: object = None

    async def prepare(self) -> None:
        """Build the client now (`Runtime.start`), in a worker thread: constructing one
        blocks for tens of ms (a TLS context from the CA bundle) and the first one in a
        process for hundreds (the SDK imports its HTTP stack then), which every call in
        flight would otherwise pay on the trio thread at the first response."""
        client = await trio.to_thread.run_sync(self._new_client, limiter=self._thread_limiter)
        self._client, self._client_token = client, trio.lowlevel.current_trio_token()

    @property
    def client(self) -> openai.AsyncOpenAI:
        # A client's connections belong to the trio run that opened them; a new run (a
        # test, a restarted server) gets a new client. Built here, on the trio thread,
        # only when `prepare()` did not run in this run (the SDK used directly).
        token = trio.lowlevel.current_trio_token()
        if self._client is None or self._client_token is not token:
            self._client, self._client_token = self._new_client(), token
        return self._client

    def _new_client(self) -> openai.AsyncOpenAI:
        s = self.settings
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=s.base_url,
            organization=s.organization,
            project=s.project,
            max_retries=0,
            # Our trio deadlines fire first; this only stops a socket from living forever.
            # It is sent with every request, so it holds whatever the pool's own is.
            timeout=s.total_timeout_s + 5.0,
            http_client=openai.DefaultAsyncHttpxClient(limits=_pool_limits(s.keepalive_s)),
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True):
                await client.close()

    def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSchema],
        call: CallInfo | None = None,
    ) -> Response:
        """One response: `async with llm.stream(...) as events: async for ev in events`."""
        logger = call_log(log, call.call_id) if call is not None else log
        return Response(self, self.request_body(messages, tools), logger)

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> dict[str, Any]:
        s = self.settings
        kept = trim_history(messages, s.context_tokens)
        if len(kept) < len(messages):
            log.debug("history trimmed from %d to %d messages", len(messages), len(kept))
        body: dict[str, Any] = {
            "model": s.model,
            # An assistant message with neither text nor tool calls (a response cut off
            # before the caller heard anything) says nothing; some servers reject it.
            "messages": [
                wire_message(m) for m in kept if m.role != "assistant" or m.content or m.tool_calls
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body[s.max_tokens_param] = s.max_tokens
        if tools:
            body["tools"] = wire_tools(tools)
            body["tool_choice"] = "auto"
            body["parallel_tool_calls"] = s.parallel_tool_calls
        return body

    async def verify(self) -> None:
        """A cheap authenticated request (list models): ProviderAuthError for a bad key.

        `hookline check --online` calls it. A server without /models (404) passes: it
        answered, and it did not refuse the key.
        """
        with trio.move_on_after(self.settings.total_timeout_s) as scope:
            try:
                await self.client.models.list()
            except openai.NotFoundError:
                log.info("%s has no /models; skipping the key check", self.client.base_url)
            except openai.APIError as e:
                raise translate(e, self.settings.api_key_env) from None
        if scope.cancelled_caught:
            raise ProviderTimeout(
                f"no answer from {self.client.base_url} within {self.settings.total_timeout_s:g}s",
                provider=PROVIDER,
            )


class _PendingCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class Response:
    """One streamed response: an async context manager that is its own event iterator.

    Deadlines: each attempt must produce its first token within `first_token_timeout_s`,
    the whole response must end within `total_timeout_s`. Leaving the context early
    closes the HTTP response, which closes its connection (the body was not read out).
    """

    def __init__(
        self, llm: OpenAILLM, body: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter
    ) -> None:
        self._llm = llm
        self._body = body
        self._log = logger
        self._stack = AsyncExitStack()
        self._bytes: AsyncGenerator[bytes, None] | None = None
        self._sse = SSEParser()
        self._ready: deque[LLMEvent] = deque()
        self._calls: dict[int, _PendingCall] = {}
        self._usage: Usage | None = None
        self._finish_reason: str | None = None
        self._started = False  # a token (or tool-call fragment) arrived
        self._finished = False
        self._start = 0.0
        self._deadline = 0.0
        self._first_deadline = 0.0

    # ----------------------------------------------------------------- context

    async def __aenter__(self) -> Response:
        self._start = trio.current_time()
        self._deadline = self._start + self._llm.settings.total_timeout_s
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        self._finished = True
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _CLOSE_BOUND_S):
            try:
                if self._bytes is not None:
                    await self._bytes.aclose()
                await self._stack.aclose()
            except _TRANSPORT_ERRORS:
                pass  # the connection is gone either way

    # ----------------------------------------------------------------- request and retries

    async def _open(self) -> None:
        settings = self._llm.settings
        completions = self._llm.client.chat.completions.with_streaming_response

        async def attempt() -> None:
            now = trio.current_time()
            self._first_deadline = min(self._deadline, now + self._llm.first_token_timeout_s)
            with trio.move_on_at(self._first_deadline):
                try:
                    # The body goes as `extra_body`, which the SDK sends as it is: given
                    # as parameters, it is first walked by the SDK's TypedDict transform,
                    # ~3.4 ms of CPU for a shop agent's tools and a dozen messages, on the
                    # thread that carries every call's audio. It is wire JSON already.
                    response = await self._stack.enter_async_context(
                        completions.create(
                            model=self._body["model"], messages=[], extra_body=self._body
                        )
                    )
                except (openai.APIStatusError, openai.APIConnectionError) as e:
                    raise translate(e, settings.api_key_env) from None
                self._bytes = response.iter_bytes()
                return
            # A whole first-token bound has passed: past any retry budget worth waiting.
            error = self._timeout("no response")
            error.retryable = False
            raise error

        deadline = min(self._start + settings.max_retry_wait_s, self._deadline)
        await retry(attempt, _BACKOFF, what="the request", log=self._log, deadline=deadline)

    def _timeout(self, what: str) -> ProviderTimeout:
        if self._started or trio.current_time() >= self._deadline:
            bound = f"the response took over {self._llm.settings.total_timeout_s:g}s"
        else:
            bound = f"no first token within {self._llm.first_token_timeout_s:g}s"
        return ProviderTimeout(f"{what}: {bound}", provider=PROVIDER)

    # ----------------------------------------------------------------- events

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> LLMEvent:
        while not self._ready:
            if self._finished:
                raise StopAsyncIteration
            try:
                await self._read()
            except BaseException:
                self._finished = True
                raise
        return self._ready.popleft()

    async def _read(self) -> None:
        assert self._bytes is not None, "use the response inside `async with`"
        deadline = self._deadline if self._started else self._first_deadline
        data = None
        ended = False
        with trio.move_on_at(deadline):
            try:
                data = await self._bytes.__anext__()
            except StopAsyncIteration:
                ended = True
            except _TRANSPORT_ERRORS as e:
                raise ProviderUnavailable(
                    f"connection lost mid-response ({type(e).__name__}: {e})", provider=PROVIDER
                ) from None
        if ended:
            for payload in self._sse.close():
                self._handle(payload)
            if not self._finished:
                self._end_without_done()
            return
        if data is None:
            raise self._timeout("stream stalled")
        for payload in self._sse.feed(data):
            self._handle(payload)
            if self._finished:
                await self._drain()
                return

    def _handle(self, payload: bytes) -> None:
        if self._finished:
            return
        if payload.startswith(b"[DONE]"):
            self._complete()
            return
        try:
            chunk: Chunk = decode_chunk(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise ProviderProtocolError(
                f"malformed chunk ({e}): {payload[:120]!r}", provider=PROVIDER
            ) from None
        if chunk.error is not None:
            err = chunk.error
            raise ProviderUnavailable(
                f"error mid-stream ({err.type or 'error'}{f'/{err.code}' if err.code else ''}): "
                f"{err.message or 'no message'}",
                provider=PROVIDER,
            )
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # we ask for one choice; ignore any other
            delta = choice.delta
            if delta.content:
                self._started = True
                self._ready.append(TextDelta(delta.content))
            if delta.refusal:
                self._started = True
                self._ready.append(TextDelta(delta.refusal))
            if delta.tool_calls:
                self._started = True
                self._accumulate(delta.tool_calls)
            if choice.finish_reason:
                self._started = True
                self._finish_reason = choice.finish_reason
                if choice.finish_reason in ("length", "content_filter"):
                    self._log.warning("response cut short: finish_reason=%s", choice.finish_reason)
                self._emit_calls()
        if chunk.usage is not None:
            u = chunk.usage
            details = u.prompt_tokens_details
            self._usage = Usage(
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cached_tokens=(details.cached_tokens or 0) if details else 0,
            )

    def _accumulate(self, fragments: list[Any]) -> None:
        for frag in fragments:
            call = self._calls.get(frag.index)
            if call is None:
                call = self._calls[frag.index] = _PendingCall()
            if frag.id:
                call.id = frag.id
            if frag.function is not None:
                if frag.function.name and not call.name:
                    call.name = frag.function.name
                if frag.function.arguments:
                    call.arguments.append(frag.function.arguments)

    def _emit_calls(self) -> None:
        """Complete tool calls, in index order, once the model finished them all."""
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.id or not call.name:
                raise ProviderProtocolError(
                    f"tool call #{index} arrived without {'an id' if not call.id else 'a name'}",
                    provider=PROVIDER,
                )
            self._ready.append(
                ToolCallRequest(id=call.id, name=call.name, arguments="".join(call.arguments))
            )
        self._calls.clear()

    def _complete(self) -> None:
        self._emit_calls()  # a server that ended without finish_reason
        if self._usage is not None:
            self._ready.append(self._usage)
        self._finished = True

    def _end_without_done(self) -> None:
        if self._finish_reason is None:
            raise ProviderUnavailable(
                "the stream ended before the response was complete", provider=PROVIDER
            )
        # Some compatible servers omit [DONE]; a finish_reason is complete enough.
        self._complete()

    async def _drain(self) -> None:
        """Read the body's end after [DONE] (briefly) so the connection can be reused."""
        assert self._bytes is not None
        with trio.move_on_after(_DRAIN_BOUND_S):
            try:
                async for _ in self._bytes:
                    pass
            except _TRANSPORT_ERRORS:
                pass
        await self._close()


# --------------------------------------------------------------------------- errors


def translate(err: openai.APIError, api_key_env: str) -> ProviderError:
    """The SDK's error as hookline's. 401 messages never echo the server's text: it
    quotes part of the key."""
    env = api_key_env or "(no key configured)"
    if isinstance(err, openai.APITimeoutError):
        return ProviderTimeout("the request timed out", provider=PROVIDER)
    if isinstance(err, openai.APIConnectionError):
        return ProviderUnavailable(
            f"cannot reach the server: {err.__cause__ or err}", provider=PROVIDER
        )
    if not isinstance(err, openai.APIStatusError):
        return ProviderUnavailable(str(err), provider=PROVIDER)
    status = err.status_code
    if isinstance(err, openai.AuthenticationError):
        message = f"the API key in {env} was refused (401 {_code(err)})"
    elif isinstance(err, openai.PermissionDeniedError):
        message = (
            f"the API key in {env} may not use this model or project "
            f"(403 {_code(err)}): {_message(err)}"
        )
    else:
        message = f"HTTP {status} {_code(err)}: {_message(err)}"
    return error_for_status(
        status,
        message,
        provider=PROVIDER,
        retry_after=_retry_after(err.response.headers),
        auth_hint=f"set a valid key in {env}",
        refused_hint="the server refused the request",
        retryable=_should_retry(err),
    )


def _should_retry(err: openai.APIStatusError) -> bool | None:
    """Where OpenAI says more than the status does (as its SDK reads it); None: the
    status decides."""
    should = err.response.headers.get("x-should-retry")
    if should in ("true", "false"):
        return should == "true"
    if err.status_code == 429 and err.code == "insufficient_quota":
        return False  # a billing problem: waiting will not fix it
    if err.status_code == 409:
        return True  # a lock timeout on OpenAI's side; the SDK retries it too
    return None


def _code(err: openai.APIError) -> str:
    return str(err.code or err.type or "error")


def _message(err: openai.APIError) -> str:
    body = err.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return err.message


def _retry_after(headers: Any) -> float | None:
    """`retry-after-ms` (OpenAI's own), then the standard `retry-after`."""
    ms = parse_retry_after(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    return parse_retry_after(headers.get("retry-after"))
