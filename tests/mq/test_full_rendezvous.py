"""A client waiting for room in a listener's full queue of announcements holds no queues of
its own yet: killed (-9) while it waits, it leaves nothing behind. Its pair of queues would
otherwise stay until reboot (nobody else knows their names), each charged to the user's
RLIMIT_MSGQUEUE."""

from __future__ import annotations

import os
from collections.abc import Callable

import posix_ipc
import pytest
from tests._proc import kill9, python, wait_until

import ipcwire
from ipcwire.mq.blocking import MessageQueue, MqListener

PRELUDE = "import ipcwire, ipcwire.mq.blocking, ipcwire.mq.aio, asyncio\nipcwire.mechanisms()\n"


def _queues_of(pid: int, base: str) -> list[str]:
    """The queues named ``base`` or ``base.*`` that ``pid`` has open (an mq descriptor's
    link in /proc names its queue)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == base or target.startswith(base + "."):
            out.append(target)
    return out


def _waiting(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as f:
        return "poll" in f.read()


@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_client_killed_waiting_for_room_leaves_no_queues(
    mq_url: Callable[..., str], driver: str
) -> None:
    url = mq_url("backlog=1")
    code = (
        f'ipcwire.connect("{url}", timeout=60)\n'
        if driver == "blocking"
        else f'asyncio.run(ipcwire.aio.connect("{url}", timeout=60))\n'
    )
    with ipcwire.listen(url) as listener, ipcwire.connect(url, timeout=10):
        # that client, answered and not accepted, fills the backlog of 1: the listener
        # stops reading its queue, which this announcement then fills
        assert isinstance(listener, MqListener)
        name = listener.queue.name
        with MessageQueue.open(name) as rendezvous:
            rendezvous.send(b"someone else's announcement")
        proc = python(PRELUDE + code)
        try:
            assert wait_until(
                lambda: name in _queues_of(proc.pid, name) and _waiting(proc.pid), timeout=20
            ), "the client never started waiting"
            held = [q for q in _queues_of(proc.pid, name) if q != name]
            kill9(proc)
        finally:
            if proc.poll() is None:
                kill9(proc)
            proc.communicate()
        for q in held:  # what the kill left behind
            try:
                posix_ipc.unlink_message_queue(q)
            except posix_ipc.ExistentialError:
                pass
        assert held == []
