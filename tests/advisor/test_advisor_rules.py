"""The rule table is data: checked for consistency with the questions and the registry, and
for covering the situations the issue lists; the engine reads it with the registry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import ipcwire
from ipcwire.advisor import QUESTIONS, REQUIREMENTS, RULES, Answers, Pick, Rule, advise
from ipcwire.advisor.picks import consider, runtime_dir
from ipcwire.advisor.questions import parse_answer, parse_latency, parse_throughput, this_os
from ipcwire.advisor.rules import Condition
from ipcwire.registry import Capabilities

QUESTION_KEYS = {q.key: q for q in QUESTIONS}


def _first_rule(answers: Answers) -> Rule:
    values = answers.as_dict()
    for rule in RULES:
        if all(c.holds(values[c.key]) for c in rule.when):
            return rule
    raise AssertionError("no rule applies")


def test_rules_are_consistent_with_the_questions_and_the_registry() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids)), "rule ids are unique"
    assert RULES[-1].when == (), "the last rule always applies, so there is always an answer"
    cap_fields = {f.name for f in dataclasses.fields(Capabilities)}
    for rule in RULES:
        assert rule.picks and rule.because
        for cond in rule.when:
            q = QUESTION_KEYS[cond.key]
            if q.choices:
                assert cond.value in q.choices, (rule.id, cond)
            elif q.kind == "bool":
                assert isinstance(cond.value, bool)
            else:
                assert cond.op in ("<=", ">=") and isinstance(cond.value, float | int)
        for pick in rule.picks:
            assert pick.wait in (None, "spin", "park", "hybrid")
    for req in REQUIREMENTS:
        assert req.capability in cap_fields or req.capability == "sleeps_when_idle"
        assert all(c.key in QUESTION_KEYS for c in req.when)


@pytest.mark.parametrize(
    ("answers", "scheme"),
    [
        (Answers(relation="parent-child"), "pipe"),
        (Answers(relation="parent-child", progress=True), "unix"),
        (Answers(throughput=2e9), "shm"),
        (Answers(latency_us=5.0), "unix"),
        (Answers(latency_us=0.5), "shm"),
        (Answers(typed_rpc=True), "grpc"),
        (Answers(direction="one-way"), "fifo"),
        (Answers(), "unix"),
        (Answers(distance="may-move", pattern="streaming"), "ws"),
        (Answers(distance="may-move"), "http"),
        (Answers(distance="may-move", typed_rpc=True), "grpc"),
        (Answers(distance="may-move", pattern="fire-and-forget"), "udp"),
        (Answers(browser="server-to-client"), "sse+http"),
        (Answers(browser="both-ways"), "ws"),
        (Answers(browser="request-reply"), "http"),
        (Answers(durable=True), "spool"),
        (Answers(service=True, os="linux"), "dbus"),
        (Answers(service=True, os="darwin"), "xpc"),
        (Answers(service=True, os="freebsd"), "dbus"),
        (Answers(agents="spawned"), "pipe"),
        (Answers(agents="spawned", progress=True), "unix"),
        (Answers(agents="web-ui"), "pipe"),
        (Answers(agents="orchestrator"), "unix"),
        (Answers(agents="orchestrator", distance="may-move"), "grpc"),
    ],
)
def test_the_table_covers_the_situations_of_the_issue(answers: Answers, scheme: str) -> None:
    assert _first_rule(answers).picks[0].scheme == scheme


def test_durable_both_ways_is_a_spool_per_direction() -> None:
    one_way = advise(Answers(durable=True, direction="one-way")).recommended
    assert one_way is not None and (one_way.pick.scheme, one_way.pick.per_direction) == (
        "spool",
        False,
    )
    both = advise(Answers(durable=True))
    assert both.recommended is not None and both.recommended.pick.per_direction
    assert "one per direction" in both.recommended.title
    skipped = both.steps[0].considered[0].skipped
    assert skipped is not None and "bidirectional is false" in skipped


def test_telling_a_crash_from_a_finish_leaves_out_what_cannot() -> None:
    """--tells-failure: a pipe between unrelated processes cannot tell a failed peer (a pipe's
    end is only an end), so it is skipped, and says why. Spawned agents keep spawn()'s pipes:
    the parent, the side that watches, gets ChannelBroken with the child's exit status; a
    caveat says the child sees a killed parent only as end of input."""
    got = advise(Answers(agents="spawned", tells_failure=True))
    assert got.recommended is not None and got.recommended.pick.scheme == "pipe"
    assert any("end of input" in c for c in got.recommended.caveats)
    one_way = advise(Answers(direction="one-way", tells_failure=True))
    skipped = [c.skipped for s in one_way.steps for c in s.considered if c.skipped]
    assert any("tells_failure is false" in text for text in skipped)
    udp = advise(Answers(distance="may-move", pattern="fire-and-forget", tells_failure=True))
    assert udp.recommended is not None and udp.recommended.pick.scheme == "ws"


def test_agents_with_a_web_ui_get_stdio_plus_sse() -> None:
    pick = _first_rule(Answers(agents="web-ui")).picks[0]
    assert (pick.scheme, pick.also) == ("pipe", ("sse+http",))


def test_recommendation_comes_from_the_registry() -> None:
    advice = advise(Answers(relation="parent-child", progress=True))
    spec = ipcwire.lookup("unix")
    assert advice.recommended is not None
    assert advice.recommended.url == spec.example_url.replace("/run/user/1000", runtime_dir())
    assert advice.recommended.title == spec.title
    assert advice.recommended.rule is not None
    assert advice.recommended.rule.id == "parent-child-progress"
    assert advice.runner_up is not None and advice.runner_up.pick.scheme == "pipe"
    assert [s.rule.id for s in advice.path][-1] == "parent-child-progress"


def test_unregistered_scheme_is_skipped_with_the_reason() -> None:
    rules = (
        Rule("future", (), (Pick("nosuchmech"), Pick("tcp")), "a mechanism not written yet"),
        Rule("fallback", (), (Pick("unix"),), "always"),
    )
    advice = advise(Answers(), rules=rules)
    skipped = advice.steps[0].considered[0]
    assert skipped.skipped == "nosuchmech: is not registered (yet) in this ipcwire"
    assert advice.recommended is not None and advice.recommended.pick.scheme == "tcp"
    assert advice.runner_up is not None and advice.runner_up.pick.scheme == "unix"


def test_capabilities_are_read_from_the_registry() -> None:
    # Server-Sent Events are one-way in the registry: asked for both ways, they are skipped.
    seen = consider(Pick("sse+http"), Answers(browser="both-ways"))
    assert seen.skipped is not None and "bidirectional is false" in seen.skipped
    # A mechanism that does not cross machines is skipped when the processes may move.
    seen = consider(Pick("unix"), Answers(distance="may-move"))
    assert seen.skipped is not None and "crosses_machines is false" in seen.skipped
    # The target OS is checked against the registry's platforms.
    seen = consider(Pick("unix"), Answers(os="win32"))
    assert seen.skipped is not None and "does not run on win32" in seen.skipped
    # A wait policy the registry does not list for the mechanism is refused.
    seen = consider(Pick("unix", wait="spin"), Answers(idle_sleep=False))
    assert seen.skipped is not None and "no wait policy 'spin'" in seen.skipped


def test_a_mechanism_unavailable_here_is_skipped_with_the_install_hint() -> None:
    # A third-party mechanism whose library is missing, registered in a fresh interpreter.
    code = textwrap.dedent(
        """
        import json
        from ipcwire.registry import Capabilities, MechanismSpec, register
        from ipcwire.advisor import Answers, Pick, Rule, advise
        register(MechanismSpec(scheme="needslib", title="Needs a library", summary="",
                 capabilities=Capabilities(), blocking="x", requires=("no_such_lib_xyz",),
                 extra="needslib"))
        rules = (Rule("r", (), (Pick("needslib"), Pick("unix")), "because"),)
        advice = advise(Answers(), rules=rules)
        print(json.dumps(advice.as_dict()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    data = json.loads(out.stdout)
    skipped = data["path"][0]["considered"][0]["skipped"]
    assert "not available" in skipped and "pip install 'ipcwire[needslib]'" in skipped
    assert data["recommended"]["scheme"] == "unix"


def test_another_os_is_judged_by_the_registry_not_by_this_machine() -> None:
    mac = advise(Answers(os="darwin"))
    assert mac.recommended is not None and mac.recommended.pick.scheme == "unix"
    assert "darwin" in ipcwire.lookup("unix").capabilities.platforms


def test_answers_parse_units_and_prefixes() -> None:
    assert parse_latency("10us") == 10.0
    assert parse_latency("10µs") == 10.0
    assert parse_latency("500ns") == 0.5
    assert parse_latency("2ms") == 2000.0
    assert parse_throughput("1GB/s") == 1e9
    assert parse_throughput("200MB/s") == 2e8
    assert parse_throughput("1GiB/s") == 1024**3
    assert parse_answer("relation", "parent") == "parent-child"
    assert parse_answer("durable", "yes") is True
    assert parse_answer("latency_us", "") is None
    for key, bad in (("latency_us", "fast"), ("throughput", "10 parsecs"), ("relation", "x")):
        with pytest.raises(ValueError, match=r"latency|throughput|choose one"):
            parse_answer(key, bad)


def test_numeric_conditions_never_hold_without_a_requirement() -> None:
    assert not Condition("latency_us", "<=", 10.0).holds(None)
    assert Condition("latency_us", "<=", 10.0).holds(10.0)
    assert Condition("throughput", ">=", 1e9).holds(2e9)


def test_a_runner_up_gives_its_own_reason_not_the_first_picks() -> None:
    """The runner-up's "why" was the rule's reason for its first pick ("offers it after
    unix: ... a Unix domain socket ..." under TCP). A later pick with a ``how`` shows that
    instead, and says which rule's next choice it is."""
    got = advise(Answers())
    assert got.recommended is not None and got.recommended.pick.scheme == "unix"
    runner = got.runner_up
    assert runner is not None and runner.pick.scheme == "tcp"
    assert runner.because == "rule local-default's next choice after unix"
    assert "Unix domain socket" not in runner.because and runner.pick.how


def test_example_paths_are_this_users_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's example paths are under /run/user/1000, which another user cannot write
    (and root's, or a container's, may not exist): choose printed them all the same."""
    answers = Answers(relation="unrelated")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    advice = advise(answers)
    assert advice.recommended is not None
    assert advice.recommended.url == f"unix://{tmp_path}/app.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    advice = advise(answers)
    assert advice.recommended is not None
    assert advice.recommended.url == f"unix://{tempfile.gettempdir()}/app.sock"
    grpc = advise(Answers(relation="unrelated", typed_rpc=True))
    assert grpc.recommended is not None and grpc.recommended.pick.scheme == "grpc"
    assert "/run/user/1000" not in grpc.recommended.url
    # Advice for another OS keeps the example: this machine's directories are not its own.
    other = "darwin" if this_os() != "darwin" else "linux"
    advice = advise(Answers(relation="unrelated", os=other))
    assert advice.recommended is not None and "/run/user/1000/" in advice.recommended.url


def test_a_mechanism_whose_probe_fails_here_is_not_recommended_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a session bus, choose recommended D-Bus for a desktop service while `ipcwire
    platforms` said it does not work here: choose read only the registry's reason, not the
    mechanism's probe(). All three commands now ask MechanismSpec.unavailable_here()."""
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    reason = ipcwire.lookup("dbus").unavailable_here()
    assert reason is not None and "session bus" in reason
    advice = advise(Answers(relation="unrelated", service=True))
    assert advice.recommended is not None and advice.recommended.pick.scheme != "dbus"
    [step] = [s for s in advice.path if s.rule.id == "desktop-service-linux"]
    assert any("session bus" in (c.skipped or "") for c in step.considered)
