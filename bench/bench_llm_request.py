"""CPU per LLM request on the trio thread: the OpenAI plugin, a shop-sized body.

Every request a call makes (each turn, and again after each tool call) runs on the one
thread that also carries every call's audio, so its CPU is a stall for every other call.
This opens N streamed responses one after another against the loopback OpenAI fake (in
this process, zero latency, a short text answer) with the tools and history of a shop
call: `--tools` function tools (5 string parameters each) and `--messages` history
messages behind a ~3,000-character system prompt. Prints JSON: CPU ms (this process,
user+sys) per request, opened and read to the end, fake included.

    uv run python bench/bench_llm_request.py --requests 300 --tools 8 --messages 12
"""

from __future__ import annotations

import argparse
import sys
import time

import msgspec
import trio

from hookline.providers import Message, ToolSchema
from hookline_llm_openai import OpenAILLM, OpenAISettings
from hookline_testkit.fake_openai import fake_openai, text


def tools(n: int) -> list[ToolSchema]:
    properties = {
        f"field_{j}": {"type": "string", "description": "what the caller said for it " * 3}
        for j in range(5)
    }
    return [
        ToolSchema(
            name=f"tool_{i}",
            description="Books, moves or looks up a service appointment. " * 4,
            parameters={"type": "object", "properties": properties, "required": ["field_0"]},
        )
        for i in range(n)
    ]


def history(n: int) -> list[Message]:
    said = "I need an oil change for my Civic, some time tomorrow morning if you can. "
    return [
        Message(role="system", content="You are the phone agent of an auto shop. " * 75),
        *(Message(role="user" if i % 2 == 0 else "assistant", content=said) for i in range(n)),
    ]


async def main(requests: int, n_tools: int, n_messages: int) -> None:
    async with fake_openai() as fake:
        fake.responder = lambda _request: text("Sure, what time works?")
        settings = OpenAISettings(base_url=fake.url)
        llm = OpenAILLM(settings, api_key=fake.api_key, first_token_timeout_s=5.0)
        schemas, messages = tools(n_tools), history(n_messages)
        try:
            for _ in range(5):  # warm-up: connection, imports
                async with llm.stream(messages, schemas) as events:
                    async for _event in events:
                        pass
            cpu0 = time.process_time()
            for _ in range(requests):
                async with llm.stream(messages, schemas) as events:
                    async for _event in events:
                        pass
            cpu = time.process_time() - cpu0
        finally:
            await llm.aclose()
    out = {
        "bench": "llm_request",
        "requests": requests,
        "tools": n_tools,
        "messages": n_messages,
        "cpu_ms_per_request": round(1000 * cpu / requests, 3),
    }
    sys.stdout.write(msgspec.json.encode(out).decode() + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tools", type=int, default=8)
    parser.add_argument("--messages", type=int, default=12)
    args = parser.parse_args()
    trio.run(main, args.requests, args.tools, args.messages)
