"""``ipcwire bench`` output files with a command line that is not text, and writes that fail.

A command-line argument holding a byte that is not UTF-8 (``--json $'b\\xff/r.json'``) is a
lone surrogate in Python (``'\\udcff'``). Before, the report kept it in ``command_line``:
``--html`` and ``--markdown`` died with UnicodeEncodeError ('surrogates not allowed') leaving
a 0-byte file, and ``--load`` of such a report failed the same way. Now the command line is
stored and shown as text (the byte as ``\\xff``), and every output file is written whole or
not at all. ``report_small.json`` is a real two-contender report (a short unix run) cut down.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

from ipcwire.bench import validate

REPORT = Path(__file__).with_name("report_small.json")
BAD = b"b\xff"  # a directory name that is not UTF-8


def _report(tmp_path: Path, command_line: list[str]) -> Path:
    doc = json.loads(REPORT.read_text())
    doc["command_line"] = command_line
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))  # (lone surrogates as \udcff escapes, as before)
    return path


def _bench(
    *args: str | bytes, cwd: Path, fsize: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over it is EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "ipcwire", "bench", *args],
        cwd=cwd,
        capture_output=True,
        timeout=60,
        check=False,
        preexec_fn=limit,
    )


def test_the_fixture_is_a_valid_report() -> None:
    assert validate(json.loads(REPORT.read_text())) == []


def test_arguments_that_are_not_text_are_stored_and_shown_as_escapes() -> None:
    from ipcwire.bench.report import arg_text, command_text

    assert arg_text("b\udcff/r.json") == "b\\xff/r.json"
    assert arg_text("\udcc3\udca9") == "\u00e9"  # é typed under LC_ALL=C: its UTF-8 bytes
    assert arg_text("a\ud800") == "a\\ud800"
    assert arg_text("plain \u65e5") == "plain \u65e5"
    assert command_text(["ipcwire", "--json", "b\udcff/r.json"]) == ("ipcwire --json b\\xff/r.json")


def test_outputs_under_a_directory_whose_name_is_not_utf8(tmp_path: Path) -> None:
    os.mkdir(os.fsencode(tmp_path) + b"/" + BAD)
    src = _report(tmp_path, ["ipcwire", "bench", "--json", "b\udcff/r.json"])
    out = _bench(
        "--load", str(src),
        "--json", BAD + b"/r.json",
        "--markdown", BAD + b"/r.md",
        "--html", BAD + b"/r.html",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    folder = os.fsencode(tmp_path) + b"/" + BAD
    md = Path(os.fsdecode(folder + b"/r.md")).read_bytes().decode("utf-8")  # strict: text
    page = Path(os.fsdecode(folder + b"/r.html")).read_bytes().decode("utf-8")
    saved = Path(os.fsdecode(folder + b"/r.json")).read_bytes().decode("utf-8")
    assert "Command: `ipcwire bench --json b\\xff/r.json`" in md
    assert "<code>ipcwire bench --json b\\xff/r.json</code>" in page
    doc = json.loads(saved)
    assert doc["command_line"] == ["ipcwire", "bench", "--json", "b\\xff/r.json"]
    assert "\\udc" not in saved
    assert validate(doc) == []
    # and the saved report loads and renders again
    again = _bench("--load", BAD + b"/r.json", "--markdown", "again.md", cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode(errors="replace")
    assert "b\\xff/r.json" in (tmp_path / "again.md").read_text(encoding="utf-8")


def test_a_write_that_fails_leaves_the_old_file_and_nothing_else(tmp_path: Path) -> None:
    src = _report(tmp_path, ["ipcwire", "bench"])
    for name in ("r.html", "r.md", "r.json"):
        (tmp_path / name).write_text("the report of last week\n")
    # a file size limit under the size of each output: every write fails part way (EFBIG)
    out = _bench(
        "--load", str(src), "--html", "r.html", "--markdown", "r.md", "--json", "r.json",
        cwd=tmp_path, fsize=2048,
    )  # fmt: skip
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 1, err
    for flag, name in (("--html", "r.html"), ("--markdown", "r.md"), ("--json", "r.json")):
        assert f"could not write {flag} {name}: File too large" in err
        assert (tmp_path / name).read_text() == "the report of last week\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "r.html", "r.json", "r.md"]


def test_a_write_that_fails_leaves_no_empty_file(tmp_path: Path) -> None:
    src = _report(tmp_path, ["ipcwire", "bench"])
    out = _bench("--load", str(src), "--html", "r.html", cwd=tmp_path, fsize=2048)
    assert out.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_an_output_that_is_no_regular_file_is_written_to_not_replaced(tmp_path: Path) -> None:
    # (--json /dev/full, /dev/stdout: a rename would put a regular file in their place)
    fifo = tmp_path / "r.md"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    out = _bench("--load", str(REPORT), "--markdown", "r.md", cwd=tmp_path)
    reader.join(30)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert b"Command: `ipcwire bench" in got[0]
