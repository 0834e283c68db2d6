"""Many agent-side hang-ups at once must not take the server down.

Waves of calls that all end with `end_call`: the agent says goodbye, hangs up through
the REST API, the caller's side sends `stop` and closes its WebSocket while the server
closes its own. With Hypercorn 0.18's trio worker, the connection close (`send_eof`)
raced the reply to the caller's close frame and raised `trio.BusyResourceError`
out of the whole server (issue 10, item 1). Loopback only, bounded in calls and time.
"""

from __future__ import annotations

import trio

from hookline.audio import tone_mulaw
from hookline.server import serve_app
from hookline.testing.scripted import Reply

WAVES = 4
CALLS_PER_WAVE = 20


def _voice(port: int) -> str:
    return f"http://127.0.0.1:{port}/twilio/voice"


async def test_waves_of_agent_hangups_leave_the_server_up(nursery, stack, twilio_sim):
    s = await stack(server={"max_concurrent_calls": CALLS_PER_WAVE})
    s.llm.respond = lambda messages: Reply(tool_calls=[("end_call", '{"goodbye": "Bye!"}')])
    s.recorder.on_start = lambda call_id: s.stt.expect(call_id, "That's all, thanks")
    port = await nursery.start(serve_app, s.runtime, "127.0.0.1", 0)
    hung_up: list[str] = []

    async def one_call() -> None:
        async with twilio_sim.call(_voice(port)) as call:
            await call.wait_for_audio()
            await call.wait_until_quiet()
            await call.say(tone_mulaw(0.5))
            await call.wait_closed()  # the agent's goodbye, then its hang-up
        hung_up.append(call.ended_by_rest or "")

    for wave in range(WAVES):
        with trio.fail_after(90):
            async with trio.open_nursery() as calls:
                for _ in range(CALLS_PER_WAVE):
                    calls.start_soon(one_call)
            done = (wave + 1) * CALLS_PER_WAVE
            await s.recorder.wait_for(lambda done=done: len(s.recorder.ended) == done)
    # The server lived through every wave (a crash would have failed the test's
    # nursery), and every call ended as the agent meant it to.
    assert hung_up == ["completed"] * WAVES * CALLS_PER_WAVE
    reasons = [r.end_reason for r in s.recorder.ended]
    assert reasons == ["agent_hangup"] * WAVES * CALLS_PER_WAVE, reasons
    assert s.runtime.active_calls == 0
