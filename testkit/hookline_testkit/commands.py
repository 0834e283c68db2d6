"""The commands the test kit adds to `hookline` (entry point group `hookline.commands`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hookline.chat import OFFLINE_KEY_ENV

from . import demo, dial

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    demo.add_commands(sub)
    dial.add_commands(sub)
    chat = sub.choices.get("chat")
    if chat is not None:  # `hookline chat --offline` answers with the fake below
        chat.set_defaults(offline_llm=offline_llm)


@asynccontextmanager
async def offline_llm() -> AsyncIterator[str]:
    """The OpenAI fake on loopback, answering with the demo's brain (it books an oil
    change and ends the call from what the caller types); yields its base URL. Its key
    is put in this process's environment as OFFLINE_KEY_ENV."""
    from .fake_openai import fake_openai

    async with fake_openai() as fake:
        fake.responder = demo.DemoBrain()
        os.environ[OFFLINE_KEY_ENV] = fake.api_key
        yield fake.url
