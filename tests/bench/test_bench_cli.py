"""``ipcwire bench`` end to end: a very short run restricted to Unix sockets, its JSON against
the schema, the PNG and the HTML page; then the saved report rendered again with --load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ipcwire.bench import SCHEMA, validate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipcwire", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_quick_run_writes_valid_json_png_and_html(tmp_path: Path) -> None:
    out = _bench(
        "--quick",
        "--duration", "0.05",
        "--warmup", "0.01",
        "--repeat", "1",
        "--mechanisms", "unix",
        "--no-peers",
        "--json", "out.json",
        "--plot", "out.png",
        "--html", "out.html",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + out.stdout

    doc = json.loads((tmp_path / "out.json").read_text())
    assert validate(doc) == []
    assert doc["schema_version"] == 1
    assert doc["command_line"][:3] == ["ipcwire", "bench", "--quick"]
    assert doc["config"]["mechanisms"] == ["unix"]
    assert {c["mechanism"] for c in doc["contenders"]} == {"unix"}
    ids = {c["id"] for c in doc["contenders"]}
    assert {"raw/unix", "ipcwire/unix/blocking", "ipcwire/unix/blocking/batched"} <= ids
    assert not any(c["group"] == "peer" for c in doc["contenders"])
    assert all(r["status"] == "ok" for r in doc["results"]), doc["notes"]
    kinds = {(r["contender"], r["kind"], r["size"]) for r in doc["results"]}
    assert ("ipcwire/unix/blocking", "round_trip", 64) in kinds
    assert ("ipcwire/unix/blocking", "throughput", 65536) in kinds
    rt = next(
        r for r in doc["results"]
        if r["contender"] == "ipcwire/unix/blocking" and r["kind"] == "round_trip"
    )  # fmt: skip
    assert rt["vs_baseline"] is not None
    assert rt["summary"]["round_trips"] > 0
    machine = doc["machine"]
    assert machine["pinning"]["mode"] in ("separate", "none")
    assert machine["kernel"]
    assert any(t["held"] is not None for t in doc["targets"])
    assert [r["rule"] for r in doc["rules_of_thumb"]]

    png = (tmp_path / "out.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 10_000

    page = (tmp_path / "out.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "data:image/png;base64,iVBORw0KGgo" in page
    assert "ipcwire unix" in page

    assert "sorted by round trip" in out.stdout
    assert "rules of thumb, checked here" in out.stdout

    again = _bench("--load", "out.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "sorted by round trip" in again.stdout


def test_schema_is_printed_as_json(tmp_path: Path) -> None:
    out = _bench("--schema", cwd=tmp_path)
    assert out.returncode == 0
    assert json.loads(out.stdout) == json.loads(json.dumps(SCHEMA))


def test_load_refuses_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"schema": "something else"}')
    out = _bench("--load", "x.json", cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a bench report" in out.stderr


def test_bad_sizes_are_a_usage_error(tmp_path: Path) -> None:
    out = _bench("--sizes", "lots", cwd=tmp_path)
    assert out.returncode == 2
    assert "not a size" in out.stderr


def test_a_mechanism_or_contender_that_names_nothing_is_a_usage_error(tmp_path: Path) -> None:
    # A typo measured nothing (or quietly left a mechanism out) and exited 0.
    out = _bench("--mechanisms", "unxi,tcp", "--no-peers", "--no-floor", cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert "no contender runs on unxi" in out.stderr and "unix" in out.stderr
    out = _bench("--contenders", "ipcwire/unxi/*", "--list", cwd=tmp_path)
    assert out.returncode == 2, out.stdout
    assert "ipcwire/unxi/* matches no contender" in out.stderr


TINY = ("--quick", "--duration", "0.05", "--warmup", "0.01", "--repeat", "1",
        "--mechanisms", "unix", "--no-peers", "--no-floor", "--contenders", "raw/unix")  # fmt: skip


def test_an_output_that_cannot_be_written_is_said_before_measuring(tmp_path: Path) -> None:
    # It was found after the run (half an hour for a full one), as an OSError traceback.
    out = _bench(*TINY, "--json", "nodir/out.json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "cannot write --json nodir/out.json: there is no directory nodir" in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_a_write_that_fails_after_measuring_keeps_the_rest(tmp_path: Path) -> None:
    # /dev/full: writable, and every write fails (ENOSPC), as on a full disk.
    out = _bench(*TINY, "--json", "/dev/full", "--markdown", "out.md", cwd=tmp_path)
    assert out.returncode == 1
    assert "could not write --json /dev/full: No space left on device" in out.stderr
    assert "Traceback" not in out.stderr
    assert "sorted by round trip" in out.stdout  # the table still shows the numbers
    assert (tmp_path / "out.md").read_text()


def test_load_of_a_missing_or_garbled_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "garbled.json").write_text("{not json")
    for name in ("missing.json", "garbled.json"):
        out = _bench("--load", name, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert f"cannot read {name}" in out.stderr and "Traceback" not in out.stderr


def test_a_size_over_the_largest_message_is_a_usage_error(tmp_path: Path) -> None:
    # --sizes 99999M: a MemoryError traceback from the C floor (a failed run without it).
    out = _bench(*TINY, "--sizes", "99999M", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "over 64M" in out.stderr and "Traceback" not in out.stderr


def test_a_duration_or_warmup_that_is_not_a_number_of_seconds_is_a_usage_error(
    tmp_path: Path,
) -> None:
    # inf ended in an OverflowError traceback from the workers' poll; nan in "cannot convert
    # float NaN to integer".
    for flag in ("--duration", "--warmup"):
        for value in ("inf", "nan"):
            out = _bench(*TINY, flag, value, cwd=tmp_path)
            assert out.returncode == 2, (flag, value, out.stderr)
            assert f"{flag} must be" in out.stderr and "Traceback" not in out.stderr
