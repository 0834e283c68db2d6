"""hookline's test kit: loopback fakes that speak the real wire protocols of the vendors
hookline's plugins talk to (Twilio Media Streams and REST, Deepgram streaming STT and TTS,
OpenAI chat completions, Google Calendar), a Twilio caller simulator, pytest fixtures for
all of them (registered through the `pytest11` entry point as soon as this is installed),
`FakeStack` for serving the real plugins against the fakes, and the `hookline demo` /
`hookline dial` commands.

The vendor-neutral pieces (scripted providers, the call harness, the conformance suites)
are in the core: `hookline.testing`.
"""

from .stack import FakeStack

__version__ = "0.1.0"

__all__ = ["FakeStack", "__version__"]
