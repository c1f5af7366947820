"""The runnable example of docs/mechanisms/shm.md runs and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).parent.parent.parent / "docs" / "mechanisms" / "shm.md"


def test_the_runnable_example_runs(tmp_path: Path) -> None:
    text = PAGE.read_text()
    section = text[text.index("## A runnable example") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "shm_example.py"
    script.write_text(code.group(1))
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "sum of the doubled array: 62499750000.0" in proc.stdout
    assert "worker got: b'pong'" in proc.stdout
