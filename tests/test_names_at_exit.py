"""A listener left open when the program ends normally leaves no socket file, FIFO or message
queue behind.

Before, only ``close()`` removed the file: a program that never closed its listener (or let it
be garbage collected) left ``app.sock`` after every run, on every mechanism with a socket
file (found by a newcomer walkthrough: about 200 stale ``shm.*.sock`` files had piled up in
/tmp/ipcwire-0). A process killed with -9 still leaves its file; the next ``listen()`` probes
it and replaces it (tests/unix). The same held for a fifo listener's FIFOs and for an mq
listener's queue and lock file (a queue counts against the user's RLIMIT_MSGQUEUE and the
machine's queues_max until reboot).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCHEMES = ["unix", "shm", "ws+unix", "http+unix", "grpc+unix"]


def _run(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_blocking_listener_never_closed(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "app.sock"
    _run(
        """
        import os, sys, ipcwire
        server = ipcwire.listen(sys.argv[1])
        assert os.path.exists(sys.argv[2])
        """,
        f"{scheme}://{path}",
        str(path),
    )
    assert not path.exists()


def test_an_asyncio_listener_never_closed(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    _run(
        """
        import asyncio, os, sys
        from ipcwire import aio

        async def main():
            global server
            server = await aio.listen(sys.argv[1])
            assert os.path.exists(sys.argv[2])

        asyncio.run(main())
        """,
        f"unix://{path}",
        str(path),
    )
    assert not path.exists()


def test_a_forked_child_ending_leaves_its_parents_file(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    printed = _run(
        """
        import os, sys, ipcwire
        server = ipcwire.listen(sys.argv[1])
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit handlers run in the child
        os.waitpid(pid, 0)
        print(os.path.exists(sys.argv[2]))
        with ipcwire.connect(sys.argv[1]) as ch, server.accept(timeout=10) as peer:
            ch.send(b"still served")
            print(peer.recv(timeout=10).decode())
        """,
        f"unix://{path}",
        str(path),
    )
    assert printed.splitlines() == ["True", "still served"]
    assert not path.exists()


def test_a_file_replaced_meanwhile_is_left_alone(tmp_path: Path) -> None:
    """The file at the path is no longer the listener's (someone removed it and listens there
    now): the exit does not remove the other one's."""
    path = tmp_path / "app.sock"
    _run(
        """
        import os, socket, sys, ipcwire
        server = ipcwire.listen(sys.argv[1])
        os.unlink(sys.argv[2])
        other = socket.socket(socket.AF_UNIX)
        other.bind(sys.argv[2])
        """,
        f"unix://{path}",
        str(path),
    )
    assert path.exists()


def test_a_fifo_listener_never_closed(tmp_path: Path) -> None:
    path, reply = tmp_path / "in.fifo", tmp_path / "out.fifo"
    _run(
        """
        import os, sys, ipcwire
        server = ipcwire.listen(sys.argv[1])
        assert os.path.exists(sys.argv[2]) and os.path.exists(sys.argv[3])
        """,
        f"fifo://{path}?reply={reply}",
        str(path),
        str(reply),
    )
    assert not path.exists() and not reply.exists()


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_an_mq_listener_never_closed(api: str) -> None:
    import posix_ipc

    from ipcwire.mq._rendezvous import lock_path

    name = f"/ipcwexit-{uuid.uuid4().hex[:10]}"
    code = {
        "blocking": """
            import sys, ipcwire
            server = ipcwire.listen(sys.argv[1])
            """,
        "asyncio": """
            import asyncio, sys
            from ipcwire import aio

            async def main():
                global server
                server = await aio.listen(sys.argv[1])

            asyncio.run(main())
            """,
    }[api]
    _run(code, f"mq://{name}")
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.MessageQueue(name)
    assert not os.path.exists(lock_path(name))


def test_an_mq_listener_with_unlink_false_keeps_its_queue() -> None:
    import posix_ipc

    from ipcwire.mq._rendezvous import lock_path

    name = f"/ipcwexit-{uuid.uuid4().hex[:10]}"
    _run(
        """
        import sys, ipcwire
        server = ipcwire.listen(sys.argv[1], unlink=False)
        """,
        f"mq://{name}",
    )
    posix_ipc.unlink_message_queue(name)  # it was there
    os.unlink(lock_path(name))  # (what the next listener would adopt it by)
