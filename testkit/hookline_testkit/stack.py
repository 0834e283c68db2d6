"""The real provider plugins pointed at running loopback fakes, as config and environment.

For tests and benchmarks that run `hookline serve` as a process against the fakes:

    stack = FakeStack(stt=stt_fake, tts=tts_fake, llm=openai_fake, rest=rest_fake, auth_token=T)
    path.write_text(AGENT + stack.providers_toml() + SERVER)
    env = {**os.environ, **stack.env()}
"""

from __future__ import annotations

from dataclasses import dataclass

from .fake_deepgram_stt import FakeDeepgramSTT
from .fake_deepgram_tts import FakeDeepgramTTS
from .fake_openai import FakeOpenAI
from .twilio_sim import TwilioRestFake

__all__ = ["FakeStack"]


@dataclass(frozen=True)
class FakeStack:
    stt: FakeDeepgramSTT
    tts: FakeDeepgramTTS
    llm: FakeOpenAI
    rest: TwilioRestFake
    auth_token: str

    def providers_toml(self) -> str:
        """`[providers]` and one section per provider, each aimed at its fake."""
        return f"""
[providers]
telephony = "twilio"
stt = "deepgram"
llm = "openai"
tts = "deepgram"

[telephony.twilio]
api_base_url = "{self.rest.url}"

[stt.deepgram]
url = "{self.stt.url}"

[tts.deepgram]
url = "{self.tts.url}"
base_url = "{self.tts.base_url}"
api_key_env = "DEEPGRAM_TTS_KEY"  # the two fakes hold different keys

[llm.openai]
base_url = "{self.llm.url}"
"""

    def env(self) -> dict[str, str]:
        """The secrets those sections name, with the fakes' keys."""
        return {
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_ACCOUNT_SID": self.rest.account_sid,
            "DEEPGRAM_API_KEY": self.stt.api_key,
            "DEEPGRAM_TTS_KEY": self.tts.api_key,
            "OPENAI_API_KEY": self.llm.api_key,
        }
