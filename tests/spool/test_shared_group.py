"""A spool shared by several users of one group, as the docs say: mode=0o770."""

from __future__ import annotations

import os
from pathlib import Path

from tests._proc import NOBODY, run_python


def _as(uid: int, code: str) -> str:
    """Run ``code`` as ``uid`` in the group nobody (with the usual umask 022)."""
    return run_python(
        "import os, ipcwire, ipcwire.spool.blocking\n"
        "ipcwire.mechanisms()\n"
        "os.umask(0o022)\n"
        f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({uid})\n" + code
    )


def test_two_users_of_one_group_share_a_spool_made_with_mode_0o770(spool_dir: Path) -> None:
    os.chmod(spool_dir, 0o777)
    url = f"spool://{spool_dir}/q"
    produce = (
        f"with ipcwire.connect({url!r}, mode=0o770) as ch:\n"
        "    ch.send_many([b'one', b'two'])\n"
        "print('sent')\n"
    )
    consume = (
        f"with ipcwire.connect({url!r}, mode=0o770) as ch:\n"
        "    print(ch.recv(timeout=5), ch.recv(timeout=5))\n"
        "    print(ch.store.counts())\n"
    )
    assert _as(NOBODY, produce) == "sent"
    out = _as(NOBODY - 1, consume)  # another user, same group
    assert out.splitlines()[0] == "b'one' b'two'"
    # and the other way round: the second user produces, the first consumes
    assert _as(NOBODY - 1, produce) == "sent"
    assert _as(NOBODY, consume).splitlines()[0] == "b'one' b'two'"
    q = spool_dir / "q"
    assert [os.stat(q / d).st_mode & 0o777 for d in ("", "tmp", "new", "cur", "dead")] == [
        0o770
    ] * 5
    assert sum(len(os.listdir(q / d)) for d in ("tmp", "new", "cur", "dead")) == 0
