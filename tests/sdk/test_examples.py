"""The SDK's examples run as a user runs them, against a real gateway in front of every service."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "sdk" / "python" / "examples"


@pytest.mark.parametrize("example, says", [("generate.py", "tokens, tiny:1"), ("vision.py", "caption:"),
                                           ("speech.py", "bytes of WAV ->"), ("openai_client.py", "chat:")])
def test_example_runs(full_gateway, example, says):
    out = subprocess.run([sys.executable, str(EXAMPLES / example)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMNIFORGE_BASE_URL": full_gateway.url, "OMNIFORGE_TEXT_MODEL": "tiny"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert says in out.stdout, out.stdout
