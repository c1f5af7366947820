"""The `ipcwire` command under an ASCII locale never dies of its own output.

Under ``LC_ALL=C PYTHONUTF8=0`` stdout's encoding is ascii. Before, ``ipcwire doctor ...``,
``ipcwire choose`` and ``ipcwire bench --load r.json`` died with UnicodeEncodeError on the
first ✗, · or µ they printed. Now stdout and stderr write what their encoding cannot hold as an
ASCII stand-in (✗ is x, µs is us) or an escape (a file name's byte 0xff is \\xff).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ASCII = {"LC_ALL": "C", "PYTHONUTF8": "0"}
REPORT = Path(__file__).parent / "bench" / "report_small.json"


def _run(*args: str, env: dict[str, str] = ASCII) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "PYTHONUTF8")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ipcwire", *args],
        env=full,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def _check(out: subprocess.CompletedProcess[bytes], codes: tuple[int, ...]) -> str:
    err = out.stderr.decode(errors="replace")
    assert out.returncode in codes, err
    assert b"Traceback" not in out.stderr, err
    out.stderr.decode("ascii")  # strict: all of it was written
    return out.stdout.decode("ascii")


def test_the_child_really_has_an_ascii_stdout() -> None:
    code = "import sys; print(sys.stdout.encoding, sys.getfilesystemencoding())"
    full = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "PYTHONUTF8")}
    full.update(ASCII)
    enc = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True
    )
    assert enc.stdout.split() == ["ascii", "ascii"]


def test_doctor_of_a_missing_socket(tmp_path: Path) -> None:
    text = _check(_run("doctor", f"unix://{tmp_path}/x.sock"), (1,))
    assert f"  x no socket file at {tmp_path}/x.sock" in text


def test_doctor_of_the_machine() -> None:
    text = _check(_run("doctor"), (0, 1))
    assert "this machine" in text


def test_choose() -> None:
    text = _check(_run("choose"), (0,))
    assert "Recommended:" in text
    assert " us)" in text  # the rule thresholds, "1.00 us" for "1.00 µs"


def test_bench_load() -> None:
    text = _check(_run("bench", "--load", str(REPORT)), (0,))
    assert "p50 us" in text


def test_platforms() -> None:
    _check(_run("platforms"), (0,))


def test_cat_with_a_non_ascii_path(tmp_path: Path) -> None:
    _check(_run("cat", f"unix://{tmp_path}/\u00e9.sock"), (1, 2))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\u2717 \u00b7 5 \u00b5s \u2014 a \u2192 b", "x - 5 us -- a -> b"),
        ("/tmp/\udcff.sock", "/tmp/\\xff.sock"),
        ("caf\u00e9 \u65e5 \U0001f600", "caf\\xe9 \\u65e5 \\U0001f600"),
    ],
)
def test_what_ascii_cannot_hold_is_a_stand_in_or_an_escape(text: str, shown: str) -> None:
    from ipcwire.cli._console import ESCAPE

    assert text.encode("ascii", ESCAPE).decode("ascii") == shown
    # (UTF-8 holds all but the lone surrogate, which is still a byte escape)
    assert text.encode("utf-8", ESCAPE).decode("utf-8") == text.replace("\udcff", "\\xff")
