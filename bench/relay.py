"""A bare relay: one call's wire work with no engine, the floor `hookline serve` is held to.

The issue that asked for 150 calls per core (issue 14) compares hookline with "a bare
relay (no framework, the same wire work)". This is that relay, written to run under
bench/bench_server.py (`--server relay`) against the same fakes and callers, so the two
are measured on the same host in the same hour. Per call it does what the full stack
does on the wire, and nothing else:

- the voice webhook: Twilio's signature checked (the `twilio` SDK's validator), TwiML
  with a `<Connect><Stream>` back; the media WebSocket's upgrade signature checked too;
- every 20 ms caller frame: the Twilio message decoded (JSON, base64) and the audio
  written to the Deepgram STT WebSocket at once;
- a final with `speech_final`: one streamed OpenAI chat request (httpx, no SDK) with a
  shop-sized system prompt and the history; its text to the Deepgram TTS WebSocket by
  sentence, then a Flush; the audio back to Twilio as it comes (one media message per
  TTS chunk), a `mark` after each `Flushed`;
- caller speech over the agent (an interim with words or `SpeechStarted` while a mark is
  out): `clear` to Twilio, `Clear` to TTS, the LLM request dropped.

Not done (hookline does): turn-taking rules, tools, analytics, metrics, logging per
turn, reconnects, timeouts, drain on SIGTERM (this one stops at once). The same wire layer
as hookline's media path (hookline.SocketIO, `websockets`' sans-I/O protocol) and the
plugins' own message types and parsers, so the difference is the runtime above them.

    python bench/relay.py --port 8080     # keys and fakes' URLs from the environment
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import signal
import time
from functools import partial
from urllib.parse import parse_qsl

import h11
import httpx
import msgspec
import trio
from twilio.request_validator import RequestValidator
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from hookline import SocketIO, held
from hookline.audio import MULAW_8K
from hookline_llm_openai.wire import SSEParser, decode_chunk
from hookline_stt_deepgram.client import listen_url
from hookline_stt_deepgram.messages import ListenResults, ListenSpeechStarted, decode_server_message
from hookline_stt_deepgram.settings import DeepgramSTTSettings
from hookline_telephony_twilio import protocol as tw
from hookline_tts_deepgram import wire as tts_wire

log = logging.getLogger("relay")

RECV = 65536
TOKEN_TTL_S = 60.0
SYSTEM = "You are the phone agent of Riverside Auto Service. " * 60  # ~3,000 characters
SENTENCE_END = re.compile(r"[.!?]\s")


# The providers' messages are the plugins' own types (hookline_telephony_twilio.protocol,
# hookline_stt_deepgram.messages, hookline_tts_deepgram.wire, hookline_llm_openai.wire):
# the relay decodes and encodes exactly what hookline does, so per frame the two differ
# only in what runs above the wire.
GREETING = "Thanks for calling. How can I help?"
FLUSH = tts_wire.encode(tts_wire.Flush()).encode()
CLEAR = tts_wire.encode(tts_wire.Clear()).encode()


# ---------------------------------------------------------------------- one WebSocket


class WebSocket:
    """A WebSocket on a plain socket: `websockets`' protocol, syscall-first I/O."""

    def __init__(self, sock: trio.socket.SocketType, protocol: ServerProtocol | ClientProtocol):
        self.sock = sock
        self.io = SocketIO(sock)
        self.protocol = protocol
        self.lock = trio.Lock()

    async def flush(self) -> None:
        data = b"".join(self.protocol.data_to_send())
        if not data:
            return
        async with held(self.lock):
            sent = self.io.write_nowait(data)
            if sent < len(data):
                with trio.CancelScope(shield=True):
                    await self.io.send_all(memoryview(data)[sent:])

    async def send_text(self, data: bytes) -> None:
        self.protocol.send_text(data)
        await self.flush()

    async def send_binary(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        await self.flush()

    async def frames(self) -> list:
        """The data frames of the next read; [] once the connection is over."""
        while True:
            try:
                data = await self.io.receive(RECV)
            except OSError:
                data = b""
            if not data:
                self.protocol.receive_eof()
                return []
            self.protocol.receive_data(data)
            frames = [
                f
                for f in self.protocol.events_received()
                if f.opcode in (Opcode.TEXT, Opcode.BINARY)
            ]
            if self.protocol.writes:  # pongs, close replies
                await self.flush()
            if frames:
                return frames
            if self.protocol.state is State.CLOSED:
                return []


async def connect(url: str, key: str) -> WebSocket:
    uri = parse_uri(url)
    sock = trio.socket.socket()
    await sock.connect((uri.host, uri.port))
    protocol = ClientProtocol(uri, max_size=2**22)
    request = protocol.connect()
    request.headers["Authorization"] = f"Token {key}"
    protocol.send_request(request)
    ws = WebSocket(sock, protocol)
    await ws.flush()
    while protocol.state is State.CONNECTING:
        data = await ws.io.receive(RECV)
        if not data:
            raise ConnectionError(f"{url}: closed during the handshake")
        protocol.receive_data(data)
    if protocol.handshake_exc is not None:
        raise protocol.handshake_exc
    protocol.events_received()  # the 101 response (and a TTS Metadata that came with it)
    return ws


# ---------------------------------------------------------------------- one call


class Call:
    def __init__(self, relay: Relay, twilio: WebSocket) -> None:
        self.relay = relay
        self.twilio = twilio
        self.stream_sid = ""
        self.history: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
        self.marks_out = 0  # sent and not echoed: the agent is speaking
        self.mark_no = 0
        self.llm_scope: trio.CancelScope | None = None

    async def run(self, nursery: trio.Nursery) -> None:
        stt = tts = None
        try:
            while True:
                frames = await self.twilio.frames()
                if not frames:
                    return
                for frame in frames:
                    msg = tw.decode_inbound(frame.data)
                    if type(msg) is tw.Media:
                        if stt is not None:
                            await stt.send_binary(msg.media.payload)
                    elif type(msg) is tw.Mark:
                        self.marks_out = max(0, self.marks_out - 1)  # cleared: 0 already
                    elif type(msg) is tw.Start:
                        start = msg.start
                        if not self.relay.token_ok(start):
                            return
                        self.stream_sid = start.streamSid
                        stt, tts = await self.open_providers(start.callSid)
                        nursery.start_soon(self.read_stt, stt, tts, nursery)
                        nursery.start_soon(self.read_tts, tts)
                        await self.speak_part(tts, GREETING)
                        await tts.send_text(FLUSH)
                    elif type(msg) is tw.Stop:
                        return
        finally:
            nursery.cancel_scope.cancel()
            for ws in (stt, tts, self.twilio):
                if ws is not None:
                    ws.sock.close()

    async def open_providers(self, call_sid: str) -> tuple[WebSocket, WebSocket]:
        r = self.relay
        stt_url = listen_url(DeepgramSTTSettings(url=r.stt_url), MULAW_8K, call_sid)
        tts_url = f"{r.tts_url}?model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000"
        stt = await connect(stt_url, r.stt_key)
        tts = await connect(tts_url, r.tts_key)
        return stt, tts

    async def read_stt(self, stt: WebSocket, tts: WebSocket, nursery: trio.Nursery) -> None:
        while frames := await stt.frames():
            for frame in frames:
                msg = decode_server_message(frame.data)
                if type(msg) is ListenResults:
                    words = msg.channel.alternatives[0].transcript
                    if words and self.marks_out > 0:
                        await self.barge_in(tts)
                    if msg.speech_final and words:
                        self.history.append({"role": "user", "content": words})
                        nursery.start_soon(self.answer, tts)
                elif type(msg) is ListenSpeechStarted and self.marks_out > 0:
                    await self.barge_in(tts)

    async def barge_in(self, tts: WebSocket) -> None:
        if self.llm_scope is not None:
            self.llm_scope.cancel()
        self.marks_out = 0
        await tts.send_text(CLEAR)
        await self.twilio.send_text(tw.encode(tw.Clear(streamSid=self.stream_sid)))

    async def answer(self, tts: WebSocket) -> None:
        """One streamed chat completion, spoken sentence by sentence."""
        request = {"model": "gpt-4o", "messages": self.history, "stream": True}
        body = msgspec.json.encode(request | {"stream_options": {"include_usage": True}})
        said: list[str] = []
        text = ""
        sse = SSEParser()
        with trio.CancelScope() as self.llm_scope:
            async with self.relay.http.stream(
                "POST", "/chat/completions", content=body,
                headers={"Content-Type": "application/json"},
            ) as response:  # fmt: skip
                response.raise_for_status()
                async for data in response.aiter_bytes():
                    for payload in sse.feed(data):
                        if payload != b"[DONE]":
                            for choice in decode_chunk(payload).choices:
                                text += choice.delta.content or ""
                    while m := SENTENCE_END.search(text):
                        said.append(text[: m.end()])
                        await self.speak_part(tts, text[: m.end()])
                        text = text[m.end() :]
            if text:
                said.append(text)
                await self.speak_part(tts, text)
            await tts.send_text(FLUSH)
        self.llm_scope = None
        self.history.append({"role": "assistant", "content": "".join(said)})

    async def speak_part(self, tts: WebSocket, text: str) -> None:
        await tts.send_text(tts_wire.encode(tts_wire.Speak(text)).encode())

    async def read_tts(self, tts: WebSocket) -> None:
        while frames := await tts.frames():
            for frame in frames:
                if frame.opcode is Opcode.BINARY:
                    media = tw.OutMedia(
                        streamSid=self.stream_sid, media=tw.OutMediaBody(frame.data)
                    )
                    await self.twilio.send_text(tw.encode(media))
                elif type(tts_wire.decode_server(frame.data)) is tts_wire.Flushed:
                    self.mark_no += 1
                    self.marks_out += 1
                    mark = tw.OutMark(
                        streamSid=self.stream_sid, mark=tw.MarkBody(f"m{self.mark_no}")
                    )
                    await self.twilio.send_text(tw.encode(mark))


# ---------------------------------------------------------------------- the server


class Relay:
    def __init__(self, port: int) -> None:
        env = os.environ
        self.port = port
        self.auth_token = env["TWILIO_AUTH_TOKEN"]
        self.validator = RequestValidator(self.auth_token)
        self.stt_url, self.stt_key = env["RELAY_STT_URL"], env["DEEPGRAM_API_KEY"]
        self.tts_url, self.tts_key = env["RELAY_TTS_URL"], env["DEEPGRAM_TTS_KEY"]
        self.http = httpx.AsyncClient(
            base_url=env["RELAY_LLM_URL"],
            headers={"Authorization": f"Bearer {env['OPENAI_API_KEY']}"},
            # Kept open between a call's turns (seconds apart), as hookline's client is.
            limits=httpx.Limits(
                max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=90
            ),
            timeout=30,
        )

    def stream_token(self, call_sid: str) -> str:
        expires = str(int(time.time() + TOKEN_TTL_S))
        mac = hmac.new(self.auth_token.encode(), f"{call_sid}|{expires}".encode(), hashlib.sha256)
        return f"{expires}.{mac.hexdigest()}"

    def token_ok(self, start: tw.StartBody) -> bool:
        expires, _, mac = start.customParameters.get("token", "").partition(".")
        want = hmac.new(
            self.auth_token.encode(), f"{start.callSid}|{expires}".encode(), hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(mac, want) and float(expires or 0) > time.time()

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection; its failure ends it and nothing else (it is logged)."""
        try:
            await self._handle(stream)
        except Exception:
            log.exception("connection failed")
        finally:
            await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        http = h11.Connection(h11.SERVER)
        raw = b""
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECV)
                raw += data
                http.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                return
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            target = event.target.decode()
            host = headers.get("host", f"127.0.0.1:{self.port}")
            if target.startswith("/twilio/media"):
                await self.media(stream, raw, headers, f"ws://{host}{target}")
                return
            body = b""
            while type(event := http.next_event()) is not h11.EndOfMessage:
                if event is h11.NEED_DATA:
                    http.receive_data(await stream.receive_some(RECV))
                elif isinstance(event, h11.Data):
                    body += event.data
            status, out = 404, b""
            if target == "/readyz":
                status, out = 200, b"ok"
            elif target == "/twilio/voice":
                status, out = self.voice(f"http://{host}{target}", body, headers)
            await stream.send_all(
                http.send(h11.Response(status_code=status, headers=[
                    ("content-type", "text/xml"), ("content-length", str(len(out)))]))
                + http.send(h11.Data(data=out)) + http.send(h11.EndOfMessage())
            )  # fmt: skip
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return
            http.start_next_cycle()
            raw = b""

    def voice(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        params = dict(parse_qsl(body.decode()))
        if not self.validator.validate(url, params, headers.get("x-twilio-signature", "")):
            return 403, b""
        token = self.stream_token(params["CallSid"])
        twiml = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="ws://127.0.0.1:{self.port}/twilio/media">'
            f'<Parameter name="token" value="{token}"/></Stream></Connect></Response>'
        )
        return 200, twiml.encode()

    async def media(
        self, stream: trio.SocketStream, raw: bytes, headers: dict[str, str], url: str
    ) -> None:
        signature = headers.get("x-twilio-signature", "")
        protocol = ServerProtocol(max_size=2**22)
        protocol.receive_data(raw)
        request = protocol.events_received()[0]
        assert isinstance(request, Request)
        if self.validator.validate(url, {}, signature):
            protocol.send_response(protocol.accept(request))
        else:
            protocol.send_response(protocol.reject(403, "bad signature\n"))
        twilio = WebSocket(stream.socket, protocol)
        await twilio.flush()
        if protocol.state is not State.OPEN:
            return
        async with trio.open_nursery() as nursery:
            await Call(self, twilio).run(nursery)


async def main(port: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    relay = Relay(port)
    # SIGTERM (bench_server's stop) ends it at once with status 0: no drain, no error.
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_tcp, relay.handle, port, host="127.0.0.1"))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)
