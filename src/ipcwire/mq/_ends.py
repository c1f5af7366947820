"""The end pipe: how one end of an mq channel learns that the other closed, full queue or not.

The end-of-channel marker travels in the queue, after the messages sent before it (its
priority, 0, sorts after all data). It cannot be posted while the queue is full, and the
peer may not read for a long time, or the closing process may exit right after ``close()``:
a receiver that relied on the marker alone would then wait forever (its peer's process is
alive) or call a clean close a crash (it exited).

So each channel also has an *end pipe*: a FIFO the client creates next to the listener's lock
file (``ipcwire-mq.<pair>.end``, mode as the queues), which both ends open read-write and
non-blocking and unlink with the queues' names once the channel is open. The client makes it
before its queues: a client killed before it announced them leaves a pipe that names them,
and the next client of the same listener name removes them (:func:`abandoned_pairs`).
``close()`` writes one byte into it after its last message, and never waits: the pipe always
has room. A byte in the pipe means "the other end closed"; it stays there while either end
holds the pipe, so it outlives a closer that exits at once. Each end watches the pipe while
it waits (poll, or the event loop), so a blocked receive or send wakes up.

Order is kept by one rule: a receiver that saw the byte, and *then* finds its queue empty,
has read everything sent before the close (those messages were in the queue before the
byte was written): only then does it raise ``EndOfChannel``.

The listener tells the client in its handshake reply (``"ends": true``) that it opened the
pipe; without that (it could not open it), both ends keep to the marker alone, as before.

**After a failure** (a ``with`` block or ``serve()`` handler left by an exception, on a
channel whose handshake agreed on it: ``"fails": true``, ``_proto.py``) the closer writes
``\x01`` and the reason (UTF-8, at most :data:`MAX_REASON` bytes: one write, under
``PIPE_BUF``, so it arrives whole) instead of the ``\0`` of a clean close. A receiver reads
the pipe only once it has decided that the channel ended (:func:`read_end`, which puts what
it read back): everything in it then is the peer's, as an end writes only when it closes,
and stops reading then.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import stat
import tempfile

from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire._oserror import OUT_OF_RESOURCES, translate

__all__ = [
    "MAX_REASON",
    "abandoned_pairs",
    "create_end_pipe",
    "end_pipe_path",
    "life_pipe_path",
    "make_life_pipe",
    "open_end_pipe",
    "open_life_pipe",
    "peer_ended",
    "post_end",
    "read_end",
    "remove_end_pipe",
    "remove_life_pipe",
    "shared_dir",
]

log = logging.getLogger("ipcwire")

_FLAGS = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
_FAILED = b"\x01"  # the first byte a failed end writes (a clean one writes b"\0")
_HEX = re.compile(r"[0-9a-f]+")  # the random part of a pair's name (_proto.pair_names)


def shared_dir() -> str:
    """Where ipcwire's mq files live (queue names are global across users, so a shared
    directory: /dev/shm, or the temp dir). Sticky, cleared at boot like the queues."""
    shm = "/dev/shm"  # noqa: S108
    return shm if os.access(shm, os.W_OK) else tempfile.gettempdir()


def end_pipe_path(up: str) -> str:
    """The end pipe of the channel whose client-to-server queue is named ``up``."""
    return os.path.join(shared_dir(), f"ipcwire-mq.{up[1:].removesuffix('.up')}.end")


def abandoned_pairs(up: str) -> list[str]:
    """The ``up`` names of pairs named like ``up`` (the same channel name; any pid and
    random part) whose end pipe, this user's, is still there while its client's process is
    gone: a client killed after it made its pair and before it announced it (only it knew
    the names; an announced pair is the listener's to remove). A client makes its end pipe
    before its queues, so such a pair has one (unless the pipe could not be made). The pid
    in the name may be another pid namespace's (no process here): a pipe some process still
    holds open is not abandoned."""
    prefix = "ipcwire-mq." + up.removesuffix(".up")[1:].rsplit(".", 2)[0] + "."
    directory = shared_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".end")):
            continue
        pid, dot, rand = name[len(prefix) : -len(".end")].partition(".")
        if not (dot and pid.isascii() and pid.isdigit() and _HEX.fullmatch(rand)):
            continue
        try:
            st = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        path = os.path.join(directory, name)
        if (
            stat.S_ISFIFO(st.st_mode)
            and st.st_uid == os.geteuid()
            and _gone(int(pid))
            and not _held(path)
        ):
            found.append("/" + name.removeprefix("ipcwire-mq.").removesuffix(".end") + ".up")
    return found


def _gone(pid: int) -> bool:
    """True when no process ``pid`` exists (one of another user's exists)."""
    if not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _held(path: str) -> bool:
    """True when a process holds the end pipe at ``path`` open (its client, alive): the pid
    in its name may be another pid namespace's, and is then no process here, or another."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        return exc.errno != errno.ENXIO  # ENXIO: nobody has it open for reading
    os.close(fd)
    return True


def create_end_pipe(up: str, mode: int, url: str) -> int | None:
    """The client's side: make the channel's end pipe and open it; None (logged) when it
    cannot be made, and the channel then goes without one.

    Raises:
        ResourceExhausted: out of descriptors (nothing is left behind).
    """
    return _make_fifo(end_pipe_path(up), _FLAGS, mode, url, "connecting to",
                      "no end pipe (%s): the channel ends by its marker only")  # fmt: skip


def _make_fifo(path: str, flags: int, mode: int, url: str, doing: str, why: str) -> int | None:
    """Make the FIFO ``path`` and open it with ``flags``, then give it exactly ``mode``
    (whatever the umask, as the queues); None, logged with ``why`` (``%s``: the error), when
    it cannot be made or opened (nothing is left behind).

    Raises:
        ResourceExhausted: out of descriptors (``doing`` names the step in the message).
    """
    try:
        os.mkfifo(path, 0o600)
    except OSError as exc:
        log.info("%s: " + why, url, exc)
        return None
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if exc.errno in OUT_OF_RESOURCES:
            raise translate(exc, url, doing) from exc
        log.info("%s: " + why, url, exc)
        return None
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)
    return fd


def open_end_pipe(up: str, owner: int, url: str) -> int | None:
    """The listener's side: open the end pipe a client made; None when there is none (a
    client that could not make it), or what is there is not a FIFO of the queues' owner
    ``owner`` (a uid).

    Raises:
        ResourceExhausted: out of descriptors (nothing was opened).
    """
    try:
        fd = os.open(end_pipe_path(up), _FLAGS)
    except OSError as exc:
        if exc.errno in OUT_OF_RESOURCES:
            raise translate(exc, url, "accepting on") from exc
        if exc.errno != errno.ENOENT:
            log.info("%s: cannot open the end pipe of %s: %s", url, up, exc)
        return None
    st = os.fstat(fd)
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != owner:
        os.close(fd)
        log.warning("%s: ignored a foreign file at %s", url, end_pipe_path(up))
        return None
    return fd


def remove_end_pipe(up: str) -> None:
    """Remove the end pipe's name, if it is there and ours to remove (the sticky directory
    leaves another user's to that user)."""
    try:
        os.unlink(end_pipe_path(up))
    except OSError:
        pass


def post_end(fd: int, reason: bytes = b"") -> None:
    """Tell the other end this one closed (after its last message), cleanly, or after an
    error when there is a ``reason`` (at most :data:`MAX_REASON` bytes of it). Never waits."""
    record = _FAILED + reason[:MAX_REASON] if reason else b"\0"
    try:
        os.write(fd, record)
    except OSError:
        # At most two records ever go in, each within PIPE_BUF; should a small pipe refuse
        # this one whole, the failure is told without its reason.
        try:
            os.write(fd, record[:1])
        except OSError:
            pass  # nothing to tell with


def read_end(fd: int) -> str | None:
    """What the other end wrote when it closed (call once it has): ``""`` for a clean close
    (or one from an ipcwire version that tells no failures), the reason it gave after an
    error (untrusted: bounded, shown with ``?`` for what is not printable), None when the
    pipe is empty. What it read goes back into the pipe, which goes on saying that the other
    end closed (and the write wakes a thread whose poll saw it empty meanwhile). Does not
    wait; call it from one thread at a time."""
    try:
        got = os.read(fd, 1 + MAX_REASON)
    except OSError:
        return None
    if not got:
        return None
    try:
        os.write(fd, got)  # room: it was just read out
    except OSError:
        pass
    if got[:1] != _FAILED:
        return ""
    return readable_reason(got[1:]) or "no reason given"


def peer_ended(fd: int) -> bool:
    """True when the other end has closed (its byte is in the pipe); does not wait."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in poller.poll(0))


# -- the life pipe (across pid namespaces, _proto.py) -------------------------------------------


def life_pipe_path(up: str) -> str:
    """The life pipe of the channel whose client-to-server queue is named ``up``."""
    return end_pipe_path(up).removesuffix(".end") + ".life"


def make_life_pipe(up: str, mode: int, url: str) -> int | None:
    """The listener's side: make the life pipe of a client in another pid namespace and open
    its read end (it reports a hang-up once the client's write end is closed, by its close or
    its exit); None (logged) when it cannot be made.

    Raises:
        ResourceExhausted: out of descriptors (nothing is left behind).
    """
    # (mode: as the client's queues: a user they let in may open it)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
    return _make_fifo(life_pipe_path(up), flags, mode, url, "accepting on",
                      "no life pipe (%s): a client's exit goes unseen")  # fmt: skip


def open_life_pipe(up: str, url: str) -> int | None:
    """The client's side: open the write end of the life pipe the listener made (it reports
    an error once the listener's read end is closed, by its close or its exit) and remove its
    name (another user's is left to the listener); None when it cannot be opened."""
    try:
        fd = os.open(life_pipe_path(up), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:  # (ENXIO: the listener's read end is closed already)
        log.info("%s: cannot open the life pipe (%s): the listener's exit goes unseen", url, exc)
        return None
    remove_life_pipe(up)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def remove_life_pipe(up: str) -> None:
    """Remove the life pipe's name, if it is there and ours to remove."""
    try:
        os.unlink(life_pipe_path(up))
    except OSError:
        pass
