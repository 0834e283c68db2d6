"""CPU and trio task steps per 20 ms frame of the Deepgram STT stream alone.

N streams in this process (pinned to CPU 0), each sending mu-law frames in real time
(1 s of tone, 1 s of silence, repeating) and draining its events, to the loopback fake
in a child process (pinned to CPU 1). Prints this process's CPU time (user+sys) and
trio task steps per frame sent, counted over the sending only (not connect or close).
The figures include this harness's own pacing (one sleep per frame per stream).

    uv run python bench/bench_stt_stream.py --streams 25 50 --seconds 15
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys

import trio

from hookline.audio import MULAW_8K, frames, mulaw_silence, tone_mulaw
from hookline.providers import CallInfo
from hookline_stt_deepgram import DeepgramSTT, DeepgramSTTSettings

FRAME_S = 0.02
FAKE = """
import trio
from hookline_testkit.fake_deepgram_stt import fake_deepgram_stt

async def main():
    async with fake_deepgram_stt() as fake:
        print(fake.port, fake.api_key, flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


class _Steps(trio.abc.Instrument):
    count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        _Steps.count += 1


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(url: str, api_key: str, streams: int, seconds: float) -> dict[str, float]:
    stt = DeepgramSTT(DeepgramSTTSettings(url=url), api_key=api_key)
    audio = list(frames(tone_mulaw(440, 1.0) + mulaw_silence(1.0)))
    per_stream = int(seconds / FRAME_S)
    opened, finished = trio.Semaphore(0), trio.Semaphore(0)
    go = trio.Event()
    start: dict[str, float] = {}

    async def one(i: int) -> None:
        async with stt.open(MULAW_8K, CallInfo(call_id=f"bench-{i}")) as stream:
            async with trio.open_nursery() as nursery:

                async def drain() -> None:
                    async for _ in stream:
                        pass

                nursery.start_soon(drain)
                opened.release()
                await go.wait()
                t0 = start["at"] + (i % 50) * FRAME_S / 50  # spread over the frame
                for k in range(per_stream):
                    await trio.sleep_until(t0 + k * FRAME_S)
                    await stream.send(audio[k % len(audio)])
                finished.release()
                await go.wait()
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(streams):
            nursery.start_soon(one, i)
        for _ in range(streams):
            await opened.acquire()
        cpu0, steps0 = _cpu_s(), _Steps.count
        start["at"] = trio.current_time() + 0.1
        go.set()
        for _ in range(streams):
            await finished.acquire()
        cpu1, steps1 = _cpu_s(), _Steps.count
    sent = streams * per_stream
    return {
        "streams": streams,
        "frames": sent,
        "cpu_us_per_frame": round((cpu1 - cpu0) / sent * 1e6, 1),
        "task_steps_per_frame": round((steps1 - steps0) / sent, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    fake = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-c", FAKE], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        port, api_key = fake.stdout.readline().split()
        url = f"ws://127.0.0.1:{port}/v1/listen"
        for streams in args.streams:
            result = trio.run(_measure, url, api_key, streams, args.seconds, instruments=[_Steps()])
            print(result, flush=True)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
