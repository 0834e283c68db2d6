"""The call engine: one `CallSession` per call, split by responsibility.

- `call`: the session, its nursery, the pumps between leg, STT and TTS, ending the call;
- `turns`: deciding when the caller's turn ends and when they barge in;
- `response`: one agent response (LLM -> sentences -> speech, tool rounds), the same loop
  for a call and `hookline chat`;
- `speaker`: the one task that writes to the caller's leg (audio, marks, clears), in order;
- `tool_runner`: validating and running tool calls;
- `playback`: what was sent to the caller and what they heard (marks);
- `sentences`: cutting streamed text into speakable sentences;
- `metrics`: per-turn timestamps and the latencies derived from them.
"""
