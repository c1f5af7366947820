"""Things a third party drops into a spool's directories: they go to dead/ with a typed error,
never hang a consumer, never cost a real message."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from tests._proc import NOBODY, run_python

import ipcwire
from ipcwire.errors import RemoteProtocolError, Timeout
from ipcwire.spool.blocking import SpoolChannel


def _open(url: str, **kw: object) -> SpoolChannel:
    ch = ipcwire.connect(url, **kw)  # type: ignore[arg-type]
    assert isinstance(ch, SpoolChannel)
    return ch


def _as_nobody(code: str) -> str:
    """Run ``code`` as uid nobody (the spool's modules imported first, as root)."""
    return run_python(
        "import os, ipcwire, ipcwire.spool.blocking\n"
        "ipcwire.mechanisms()\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})\n" + code
    )


def _plant(new: Path, name: str, kind: str) -> None:
    path = new / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to("/etc/hostname")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink", "socket"])
def test_a_foreign_entry_in_new_goes_to_dead_and_costs_no_message(
    spool_dir: Path, kind: str
) -> None:
    url = f"spool://{spool_dir}/q"
    new = spool_dir / "q" / "new"
    with _open(url) as p:
        p.send_many([b"a", b"b"])
        _plant(new, "5-planted", kind)  # sorts among the messages: "5" > "0"
        _plant(new, "00000000000000000000.planted", kind)  # sorts first
        p.send(b"c")
    got: list[object] = []
    errors: list[BaseException] = []

    def consume() -> None:
        with _open(url) as c:
            while True:
                try:
                    got.extend(c.recv_many(timeout=0.2))
                except RemoteProtocolError as exc:
                    errors.append(exc)
                except Timeout:
                    return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # stuck opening the FIFO: unblock it so the test can end
        for name in ("5-planted", "00000000000000000000.planted"):
            for d in (new, spool_dir / "q" / "cur"):
                try:
                    os.close(os.open(d / name, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
        t.join(10)
        pytest.fail(f"a consumer hung on a {kind} in new/")
    assert sorted(got) == [b"a", b"b", b"c"]  # type: ignore[type-var]
    # the consumer that found one hears of it (recv_many ends its batch quietly at the second)
    assert errors and all("not a message file" in str(e) and "dead" in str(e) for e in errors)
    assert sorted(os.listdir(spool_dir / "q" / "dead")) == [
        "00000000000000000000.planted",
        "5-planted",
    ]
    assert os.listdir(new) == [] and os.listdir(spool_dir / "q" / "cur") == []


def test_a_message_this_consumer_may_not_read_is_reported_once_and_skipped(
    spool_dir: Path,
) -> None:
    os.chmod(spool_dir, 0o777)
    url = f"spool://{spool_dir}/q"
    ready = _as_nobody(
        f"with ipcwire.connect({url!r}) as ch:\n"
        "    ch.send_many([b'first', b'last'])\n"
        "print('sent')\n"
    )
    assert ready == "sent"
    new = spool_dir / "q" / "new"
    first, _ = sorted(os.listdir(new))
    stranger = new / (first[:-2] + "5.0")  # sorts between the two
    stranger.write_bytes(b"root's")
    os.chmod(stranger, 0o600)  # and root owns it: nobody may not read it
    out = _as_nobody(
        f"""
got = []
with ipcwire.connect({url!r}) as ch:
    for _ in range(4):
        try:
            got.append(ch.recv(timeout=0.2))
        except ipcwire.PermissionDenied as exc:
            got.append("denied: " + str(exc))
        except ipcwire.Timeout:
            got.append("timeout")
for g in got:
    print(g)
"""
    )
    lines = out.splitlines()
    assert lines[0] == "b'first'"
    assert lines[1].startswith("denied: ") and "mode 0o600" in lines[1] and "uid 0" in lines[1]
    assert lines[2:] == ["b'last'", "timeout"]  # reported once, then skipped
    assert stranger.exists()  # left for a consumer that may read it
