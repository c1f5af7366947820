"""``ipcwire choose`` on who may connect, judged by the answer's transport, not its mechanism:
the socket file of ``grpc+unix``, ``http+unix`` and ``ws+unix`` (one machine, 0600, and each
checks peers its own way), a port on 127.0.0.1 (any local user), a spool's directory, a
session bus (run as a user runs it: the CLI in a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.advisor._bench_doc import bench_doc
from tests.advisor.test_choose_cli import choose_json


def _text(cand: dict[str, object]) -> str:
    caveats = cand["caveats"]
    assert isinstance(caveats, list)
    return " ".join(caveats)


def test_unix_socket_forms_of_grpc_and_http_say_what_they_check() -> None:
    """grpc+unix and http+unix answers had no caveat at all (unix: answers had one)."""
    data = choose_json("--typed-rpc")
    grpc, http = data["recommended"], data["runner_up"]
    assert grpc["url"].startswith("grpc+unix://"), grpc
    text = _text(grpc)
    assert text.startswith("one user only: the socket is created 0600")
    assert "mode=0o660" in text and "squatting" in text
    # gRPC has allow_uids= on neither side (ConfigurationError): the caveat must not offer it
    assert "no allow_uids= on either side" in text and "allow_uids=[" not in text
    assert "token=" in text and "docs/mechanisms/grpc.md" in text
    assert http["url"].startswith("http+unix://"), http
    text = _text(http)
    assert "allow_uids=[their uids]" in text and "client has no allow_uids=" in text
    assert "token=" in text and "docs/mechanisms/rest.md" in text
    # several users: in the why, and the socket in a directory the users share, not /tmp
    data = choose_json("--typed-rpc", "--users", "several")
    for cand, url in ((data["recommended"], "grpc+unix:///run/app/app.sock"),
                      (data["runner_up"], "http+unix:///run/app/app.sock")):  # fmt: skip
        assert cand["url"] == url, cand
        assert "several users: the socket is created 0600" in cand["because"], cand
        assert not any("0600" in c for c in cand["caveats"]), cand


def test_a_measured_ws_unix_answer_says_what_it_checks(tmp_path: Path) -> None:
    """ws+unix, measured to reach the round trip asked for, was recommended with no caveat."""
    bench = tmp_path / "bench.json"
    rows = [("unix", "block", "round_trip", 45.0), ("ws+unix", "block", "round_trip", 8.0)]
    bench.write_text(json.dumps(bench_doc(rows)))
    rec = choose_json("--latency", "10us", "--bench", str(bench))["recommended"]
    assert rec["scheme"] == "ws+unix", rec
    text = _text(rec)
    assert "0600" in text and "allow_uids=[their uids]" in text
    assert "connect() has no allow_uids=: check ch.peer.uid" in text
    several = choose_json("--latency", "10us", "--bench", str(bench), "--users", "several")
    rec = several["recommended"]
    assert rec["url"] == "ws+unix:///run/app/app.sock", rec
    assert "several users: the socket is created 0600" in rec["because"]


def test_a_unix_socket_form_is_not_offered_across_machines() -> None:
    """--distance may-move --typed-rpc listed grpc+unix and http+unix (with a TLS caveat)."""
    data = choose_json("--distance", "may-move", "--typed-rpc")
    shown = [data["recommended"], data["runner_up"], *data["others"]]
    assert not any("+unix" in c["url"] for c in shown), shown
    path = {p["rule"]: p for p in data["path"]}
    if "local-typed-rpc" in path:  # the path shown ends at the answer's rule
        skipped = [c["skipped"] for c in path["local-typed-rpc"]["considered"]]
        assert all(s and "on this machine only" in s for s in skipped), skipped


def test_several_users_a_loopback_port_says_any_local_user_can_connect() -> None:
    """--users several: the tcp runner-up said nothing of the other users who can connect."""
    tcp = choose_json("--users", "several")["runner_up"]
    assert tcp["scheme"] == "tcp", tcp
    text = _text(tcp)
    assert "several users: any process of any user on this machine can connect" in text
    assert "token=" in text and "tcp://HOST:PORT with ssl=" in text
    # one user: no such caveat (it is about other users sharing the machine)
    assert not _text(choose_json()["runner_up"])
    # the web answers on 127.0.0.1 too
    data = choose_json("--browser", "server-to-client", "--users", "several")
    for cand in (data["recommended"], data["runner_up"]):
        assert "any process of any user on this machine" in _text(cand), cand
    # a file spool: 0700 directories, mode=0o770 to share, no token
    spool = choose_json("--durable", "--users", "several")["recommended"]
    assert spool["scheme"] == "spool" and "mode=0o770" in _text(spool), spool
    # a session bus is its user's: the system bus and a policy file
    dbus = choose_json("--service", "--os", "freebsd", "--users", "several")["recommended"]
    assert dbus["scheme"] == "dbus", dbus
    assert "dbus://system/" in _text(dbus) and "<allow own=" in _text(dbus)
