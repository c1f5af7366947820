"""docs/protocol.md section 2's custom codec: ``from ipcwire import Codec`` works (before, the
``Codec`` in every public signature, ``codec: str | Codec | None``, could only be imported
from the private ``ipcwire._core.codecs``), and the page's example runs and passes
``mypy --strict`` as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ipcwire

ROOT = Path(__file__).parent.parent


def _example() -> str:
    text = (ROOT / "docs/protocol.md").read_text()
    section = text[text.index("## 2. Codecs") : text.index("## 3. Handshake")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, blocks
    return str(blocks[0])


def test_codec_is_public() -> None:
    from ipcwire import Codec
    from ipcwire._core.codecs import Codec as private

    assert Codec is private and "Codec" in ipcwire.__all__


def test_the_pages_custom_codec_runs_and_type_checks(tmp_path: Path) -> None:
    program = tmp_path / "upper_codec.py"
    program.write_text(_example())
    run = subprocess.run(
        [sys.executable, str(program)], check=False, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    # the project's cache directory: a few tenths of a second once the project was checked
    check = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(program)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
