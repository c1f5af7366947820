"""``ipcwire choose`` run as a user runs it: flags, prompts fed through stdin, bench files, a
real short measurement."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.advisor._bench_doc import bench_doc

import ipcwire

# The shared-memory mechanism is written concurrently: where the registry does not list it
# yet, these runs register its SPEC (ipcwire.shm) through the public register().
STAND_IN = textwrap.dedent(
    """
    import sys
    import ipcwire, ipcwire.shm
    from ipcwire.registry import register
    try:
        ipcwire.lookup("shm")
    except ipcwire.InvalidURL:
        register(ipcwire.shm.SPEC)
    from ipcwire.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def choose(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STAND_IN, "choose", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def choose_json(*args: str, stdin: str = "") -> dict[str, Any]:
    out = choose(*args, "--json", stdin=stdin)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_flags_give_recommendation_runner_up_and_path() -> None:
    data = choose_json("--relation", "parent-child", "--progress")
    assert data["answers"]["progress"] is True
    rec, runner = data["recommended"], data["runner_up"]
    assert (rec["scheme"], rec["rule"]) == ("unix", "parent-child-progress")
    assert rec["url"].startswith("unix://")
    assert runner["scheme"] == "pipe"
    path = data["path"]
    assert path[-1]["rule"] == "parent-child-progress" and path[-1]["applies"]
    assert not path[0]["applies"] and "survives a crash is no" in path[0]["text"]


def test_human_output_shows_the_path_and_says_numbers_are_rules_of_thumb() -> None:
    out = choose("--latency", "10us")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "Recommended: Unix domain socket" in text
    assert "Runner-up:" in text
    assert "latency-under-10us: yes (round trip <= 10.0 µs)" in text
    assert "rules of thumb, not measurements of this machine" in text


def test_interactive_prompts_read_plain_lines_and_reask_on_nonsense() -> None:
    answers = ["parent-child", "", "yes", "sideways", "both", *[""] * 20]
    data = choose_json("-i", stdin="\n".join(answers) + "\n")
    assert data["answers"]["relation"] == "parent-child"
    assert data["answers"]["progress"] is True
    assert data["answers"]["direction"] == "both"
    assert data["recommended"]["scheme"] == "unix"


def test_interactive_prompts_go_to_stderr_and_skip_questions_that_cannot_matter() -> None:
    out = choose("-i", "--json", stdin="\n" * 30)
    assert out.returncode == 0, out.stderr
    assert "Are the processes parent and child" in out.stderr
    assert "Must progress flow back" not in out.stderr  # unrelated, no agents: cannot matter
    assert "choose one of" not in out.stderr
    assert json.loads(out.stdout)["recommended"]["scheme"] == "unix"


def test_interactive_reasks_until_valid_and_fails_cleanly_at_end_of_input() -> None:
    out = choose("-i", stdin="sideways\n")
    assert out.returncode == 2
    assert "choose one of parent-child, unrelated" in out.stderr
    assert "the input ended before the question --relation was answered" in out.stderr


def test_interactive_with_no_stdin_at_all_fails_cleanly() -> None:
    # `ipcwire choose -i <&-`: Python's sys.stdin is None, and input() raises RuntimeError.
    command = f"exec {sys.executable} -c '{STAND_IN}' choose -i <&-"
    out = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "the input ended before the question --relation was answered" in out.stderr


def _vm_bench(tmp_path: Path) -> Path:
    doc = bench_doc(
        [
            ("unix", "park", "round_trip", 45.0),
            ("tcp", "park", "round_trip", 52.0),
            ("shm", "spin", "round_trip", 0.8),
            ("shm", "hybrid", "round_trip", 31.0),
            ("shm", "park", "round_trip", 40.0),
            ("unix", "park", "throughput", 1.4e9),
            ("shm", "spin", "throughput", 9e9),
        ]
    )
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    return path


def test_measurement_contradicting_the_rule_of_thumb_warns(tmp_path: Path) -> None:
    data = choose_json("--latency", "10us", "--bench", str(_vm_bench(tmp_path)))
    rec = data["recommended"]
    assert rec["scheme"] == "unix" and rec["rule"] == "latency-under-10us"
    assert rec["meets_requirements"] is False
    claim = rec["measured"][0]
    assert claim["value"] == 45.0 and claim["contender"] == "ipcwire/unix/blocking/park"
    assert "over the 10.0 µs asked for" in claim["text"]
    warnings = " ".join(data["warnings"])
    assert "does not hold on this machine: unix measured round trip p50 45.0 µs" in warnings
    assert "only shm (policy=spin) reached what you asked for" in warnings
    assert "--idle-sleep no" in warnings
    assert "Virtual machine" in warnings
    assert data["bench"]["source"].endswith("results.json")


def test_measurement_picks_spinning_shared_memory_when_spinning_is_allowed(
    tmp_path: Path,
) -> None:
    data = choose_json("--latency", "10us", "--idle-sleep", "no", "--bench",
                       str(_vm_bench(tmp_path)))  # fmt: skip
    rec = data["recommended"]
    assert (rec["scheme"], rec["wait"], rec["rule"]) == ("shm", "spin", None)
    assert rec["url"].endswith("?policy=spin")
    assert rec["meets_requirements"] is True
    assert rec["because"].startswith("measured here: round trip p50 0.80 µs")
    assert data["runner_up"]["meets_requirements"] is False


def test_under_a_microsecond_needs_spinning(tmp_path: Path) -> None:
    data = choose_json("--latency", "500ns")
    considered = [c for step in data["path"] for c in step["considered"]]
    spin = next(c for c in considered if c["pick"] == "shm (policy=spin)")
    assert "spins while it waits, but it must sleep when idle" in spin["skipped"]
    data = choose_json("--latency", "500ns", "--idle-sleep", "no")
    assert (data["recommended"]["scheme"], data["recommended"]["wait"]) == ("shm", "spin")


def test_numbers_that_agree_with_the_rule_back_it_without_warnings(tmp_path: Path) -> None:
    doc = bench_doc([("unix", "park", "round_trip", 7.5), ("tcp", "park", "round_trip", 12.0)],
                    vm=False)  # fmt: skip
    path = tmp_path / "fast.json"
    path.write_text(json.dumps(doc))
    data = choose_json("--latency", "10us", "--bench", str(path))
    assert data["recommended"]["scheme"] == "unix"
    assert data["recommended"]["meets_requirements"] is True
    assert data["warnings"] == []


def test_a_file_that_is_not_a_bench_report_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    out = choose("--bench", str(path))
    assert out.returncode == 2
    assert "is not an ipcwire bench report" in out.stderr
    assert "ipcwire bench --json" in out.stderr


def test_a_missing_or_unreadable_bench_file_is_bad_input(tmp_path: Path) -> None:
    # `choose --bench missing.json` exited 1, documented as "nothing fits".
    missing = tmp_path / "missing.json"
    unreadable = tmp_path / "dir.json"
    unreadable.mkdir()  # reading a directory fails, as root too
    for path in (missing, unreadable):
        out = choose("--bench", str(path))
        assert out.returncode == 2, out.stderr
        assert f"cannot read the bench results {path}" in out.stderr
        assert f"ipcwire bench --json {path}" in out.stderr
        assert "Traceback" not in out.stderr


def test_measure_runs_a_short_real_benchmark() -> None:
    data = choose_json("--relation", "parent-child", "--progress", "--latency", "10ms",
                       "--measure")  # fmt: skip
    assert data["bench"]["source"] == "measured now (ipcwire choose --measure)"
    rec = data["recommended"]
    assert rec["scheme"] == "unix"
    kinds = {m["metric"]: m for m in rec["measured"]}
    assert kinds["round_trip"]["contender"].startswith("ipcwire/unix/")
    assert 0 < kinds["round_trip"]["value"] < 10_000  # µs: measured, under 10 ms here
    assert kinds["round_trip"]["meets"] is True
    assert kinds["throughput"]["value"] > 0


def test_a_size_the_benchmark_cannot_measure_is_a_usage_error() -> None:
    # --measure --size 3 ended in the bench's ValueError traceback (sizes start at 16 bytes);
    # a huge size in a MemoryError.
    for size in ("3", "99999999999"):
        out = choose("--measure", "--size", size)
        assert out.returncode == 2, out.stderr
        assert "message sizes go from 16 bytes to 64M" in out.stderr
        assert "Traceback" not in out.stderr


def test_a_recommended_url_is_one_line_when_piped() -> None:
    # Piped or saved, lines were folded at 80 columns, which cut the runner-up's URLs in two.
    out = choose("--browser", "both-ways")
    assert out.returncode == 0, out.stderr
    assert "sse+http://127.0.0.1:8080/events + http://127.0.0.1:8080/ipc" in out.stdout


def test_answers_that_contradict_each_other_are_said_to() -> None:
    # One-way messages and request/reply: a FIFO was recommended without a word.
    data = choose_json("--direction", "one-way", "--pattern", "request-reply")
    assert any("a reply needs a way back" in w for w in data["warnings"])
    data = choose_json("--direction", "one-way", "--browser", "both-ways")
    assert any("--browser server-to-client" in w for w in data["warnings"])
    assert not choose_json("--direction", "one-way")["warnings"]  # the default pattern is fine


def test_a_macos_service_is_not_told_to_use_xpc_which_ipcwire_cannot_drive() -> None:
    # `choose --service --os darwin` recommended xpc:com.example.helper with no warning and no
    # note, though ipcwire has no XPC driver on any platform.
    data = choose_json("--service", "--os", "darwin")
    rec = data["recommended"]
    assert (rec["scheme"], rec["rule"]) == ("unix", "desktop-service-macos")
    assert data["runner_up"]["scheme"] != "xpc"
    rule = next(s for s in data["path"] if s["rule"] == "desktop-service-macos")
    xpc = next(c for c in rule["considered"] if c["pick"] == "xpc")
    assert "no XPC driver yet, on any platform" in xpc["skipped"]
    notes = " ".join(data["notes"])
    assert "macOS XPC is the native choice here (rule desktop-service-macos" in notes
    assert "no XPC driver yet" in notes and "use unix:// sockets meanwhile" in notes


def test_the_reason_xpc_is_refused_never_says_ipcwire_drives_it_on_darwin() -> None:
    # Here (not macOS) the registry's reason was "macOS XPC is not available on linux; it
    # works on darwin", in connect()'s error and in `ipcwire platforms`.
    with pytest.raises(ipcwire.MechanismUnavailable) as err:
        ipcwire.connect("xpc:com.example.helper")
    assert "works on darwin" not in str(err.value)
    assert "ipcwire has no XPC driver yet, on any platform" in str(err.value)
    out = subprocess.run([sys.executable, "-m", "ipcwire", "platforms"], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "works on darwin" not in flat[flat.index("xpc: macOS XPC") :]
    assert "no XPC driver yet" in flat


def test_an_unmeasured_pick_does_not_jump_ahead_of_the_rules_answer(tmp_path: Path) -> None:
    # unix measured at 43 µs, shm not measured: choose recommended the unmeasured
    # shm?policy=hybrid, TCP (from local-default) as runner-up, and warned that "the
    # recommendation is the rules' answer", which was unix.
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bench_doc([("unix", "park", "round_trip", 43.0)])))
    data = choose_json("--latency", "10us", "--bench", str(path))
    rec, runner = data["recommended"], data["runner_up"]
    assert (rec["scheme"], rec["rule"], rec["meets_requirements"]) == (
        "unix", "latency-under-10us", False)  # fmt: skip
    assert rec["measured"][0]["value"] == 43.0
    assert (runner["scheme"], runner["wait"], runner["rule"]) == (
        "shm", "hybrid", "latency-under-10us")  # fmt: skip
    assert runner["measured"] == []
    warnings = " ".join(data["warnings"])
    assert "the recommendation is the rules' answer, and the numbers beside it" in warnings
    notes = " ".join(data["notes"])
    assert "shm (policy=hybrid) has no measurement in these numbers" in notes
    assert "ipcwire bench --quick --mechanisms shm" in notes


def test_an_unmeasured_recommendation_is_not_said_to_have_numbers_beside_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tcp-only.json"
    path.write_text(json.dumps(bench_doc([("tcp", "park", "round_trip", 50.0)], vm=False)))
    data = choose_json("--latency", "10us", "--bench", str(path))
    assert data["recommended"]["scheme"] == "unix" and data["recommended"]["measured"] == []
    warnings = " ".join(data["warnings"])
    assert "the rules' answer, and it has no measurement in these numbers" in warnings
    assert "numbers beside it" not in warnings


def test_a_freebsd_desktop_service_gets_dbus_as_on_linux() -> None:
    # The registry lists D-Bus for freebsd, but `choose --service --os freebsd` fell through
    # to a Unix socket without a word.
    assert "freebsd" in ipcwire.lookup("dbus").capabilities.platforms
    data = choose_json("--service", "--os", "freebsd")
    rec = data["recommended"]
    assert (rec["scheme"], rec["rule"]) == ("dbus", "desktop-service-freebsd")
    assert rec["url"].startswith("dbus://")


def test_one_way_with_a_browser_says_the_answer_follows_the_browser() -> None:
    # docs/choose.md said "the rules then follow --direction", but the answer was the browser's
    # (ws), and the warning did not say which answer it followed.
    for browser, scheme in (("both-ways", "ws"), ("request-reply", "http")):
        data = choose_json("--direction", "one-way", "--browser", browser)
        assert data["recommended"]["scheme"] == scheme
        assert any("this answer follows --browser" in w for w in data["warnings"])
    data = choose_json("--direction", "one-way", "--pattern", "request-reply")
    assert data["recommended"]["scheme"] == "fifo"
    assert any("This answer is for one-way messages" in w for w in data["warnings"])
    page = " ".join((Path(__file__).parents[2] / "docs" / "choose.md").read_text().split())
    assert "the rules then follow `--direction`" not in page
    assert "the answer follows `--browser`" in page
