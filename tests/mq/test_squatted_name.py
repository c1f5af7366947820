"""Queue names are global: another user may create a listener's queue and its lock file
first. Before, the listener adopted them (an INFO line, "adopted the queue ... left by an
earlier listener"), wrote its holder note into the stranger's lock file, served clients the
stranger could also read from, and at close could remove neither. Now a queue or lock file
that is not this user's alone (or a queue wider than mode=) is refused with PermissionDenied
naming the owner, the mode and the fix, on both APIs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import posix_ipc
import pytest
from tests._proc import NOBODY, run_python

import ipcwire
from ipcwire import aio
from ipcwire.errors import PermissionDenied
from ipcwire.mq._rendezvous import lock_path


def _squat(name: str, *, queue: bool = True) -> str:
    """As uid nobody: make the queue (0666, unless ``queue`` is False) and the listener's
    lock file (0666), as the attacker did."""
    path = lock_path(name)
    make_queue = (
        f"posix_ipc.MessageQueue({name!r}, posix_ipc.O_CREX, mode=0o666).close()" if queue else ""
    )
    run_python(
        f"import posix_ipc\n{make_queue}\n"
        f"fd = os.open({path!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)\n"
        f"os.fchmod(fd, 0o666)\nos.close(fd)\n",
        as_nobody=True,
    )
    return path


@pytest.fixture
def name(mq_url: Callable[..., str]) -> Iterator[str]:
    """A fresh queue name; its queue and lock file, whoever made them, removed after."""
    n = mq_url()[len("mq://") :]
    yield n
    try:
        posix_ipc.unlink_message_queue(n)
    except posix_ipc.ExistentialError:
        pass
    Path(lock_path(n)).unlink(missing_ok=True)


@pytest.mark.parametrize("queue", [True, False])
def test_another_users_queue_and_lock_file_are_not_adopted(name: str, queue: bool) -> None:
    path = _squat(name, queue=queue)
    with pytest.raises(PermissionDenied) as info:
        ipcwire.listen(f"mq://{name}", codec="json")
    text = str(info.value)
    assert f"mq://{name}" in text and path in text
    assert f"owned by uid {NOBODY}" in text and "mode 0o666" in text
    assert "remove it" in text
    assert Path(path).read_bytes() == b""  # no holder note written into the stranger's file

    async def main() -> None:
        with pytest.raises(PermissionDenied, match=f"owned by uid {NOBODY}"):
            await aio.listen(f"mq://{name}", codec="json")

    asyncio.run(main())
    assert os.stat(path).st_uid == NOBODY  # left as it was


def test_another_users_queue_is_not_adopted_under_own_lock_file(name: str) -> None:
    """This user's lock file (a listener of ours that crashed), but the queue is a stranger's
    (made after ours was gone)."""
    run_python(
        f"import posix_ipc\nposix_ipc.MessageQueue({name!r}, posix_ipc.O_CREX, mode=0o666)",
        as_nobody=True,
    )
    fd = os.open(lock_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(PermissionDenied) as info:
        ipcwire.listen(f"mq://{name}")
    assert f"the queue {name} exists and is owned by uid {NOBODY}" in str(info.value)


def test_a_left_queue_wider_than_mode_is_not_adopted(name: str) -> None:
    """Our own queue and lock file (an earlier listener with unlink=False, say), but the
    queue lets more users in than this listener's mode=."""
    q = posix_ipc.MessageQueue(name, posix_ipc.O_CREX, mode=0o600)
    os.fchmod(q.mqd, 0o666)
    q.close()
    fd = os.open(lock_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    with pytest.raises(PermissionDenied, match=r"mode 0o666, which lets more users in than"):
        ipcwire.listen(f"mq://{name}")
    with ipcwire.listen(f"mq://{name}", mode=0o666):  # asked for: adopted
        pass
