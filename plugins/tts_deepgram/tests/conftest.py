import sys
from pathlib import Path

# Test modules share tts_deepgram_helpers.py (uniquely named: --import-mode=importlib puts
# no test directory on sys.path, and other plugins' helpers must not shadow it).
sys.path.insert(0, str(Path(__file__).parent))

from hookline_testkit.fixtures_deepgram_tts import fake_deepgram_tts  # noqa: F401
