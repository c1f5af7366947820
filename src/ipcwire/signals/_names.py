"""Signal names, sending signals to a process or a process group, and the target a
``signal:`` URL names."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import warnings
from collections.abc import Iterable
from typing import Any

from ipcwire._core.url import Endpoint
from ipcwire.errors import ChannelBroken, ConfigurationError, InvalidURL, PermissionDenied
from ipcwire.unix._namespaces import in_other_pid_namespace

__all__ = [
    "SignalLike",
    "check_catchable",
    "exit_status",
    "parse_signal",
    "parse_signals",
    "parse_target",
    "send_signal",
    "signals_url",
    "target_pid",
    "warn_taken_over",
]

SignalLike = int | str | signal.Signals


def parse_signal(sig: SignalLike, url: str | None = None) -> signal.Signals:
    """``"TERM"``, ``"SIGTERM"``, ``"sigterm"``, ``15`` or ``signal.SIGTERM`` -> SIGTERM.
    ``url``: the endpoint the signal is for (``signal:USR1,HUP``, ``signal:1234``), named in
    the error.

    Raises:
        ConfigurationError: not a signal this platform knows.
    """
    if isinstance(sig, signal.Signals):
        return sig
    where = f"{url}: " if url else ""
    known = ", ".join(sorted(s.name[3:] for s in signal.Signals))
    if isinstance(sig, int):
        try:
            return signal.Signals(sig)
        except ValueError:
            raise ConfigurationError(
                f"{where}{sig} is not a signal number on this platform; name the signal "
                f"instead, one of: {known}",
                endpoint=url,
            ) from None
    name = str(sig).strip().upper()
    if name.isdigit():
        return parse_signal(int(name), url)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ConfigurationError(
            f"{where}unknown signal {sig!r}; use one of (with or without SIG): {known}",
            endpoint=url,
        ) from None


def parse_signals(signals: Iterable[SignalLike]) -> list[signal.Signals]:
    """:func:`parse_signal` of each, naming in an error the endpoint they were given for
    (``signal:USR1,NOPE``)."""
    given = list(signals)
    url = "signal:" + ",".join(
        s.name[3:] if isinstance(s, signal.Signals) else str(s) for s in given
    )
    return [parse_signal(s, url) for s in given]


def signals_url(signals: Iterable[signal.Signals]) -> str:
    """``signal:TERM,INT``: the endpoint a waiter or graceful shutdown of ``signals`` is."""
    return "signal:" + ",".join(s.name[3:] for s in signals)


def check_catchable(signums: Iterable[int], url: str) -> None:
    """Refuse to wait for a signal no handler can catch (both APIs, in the same words).

    Raises:
        ConfigurationError: SIGKILL or SIGSTOP among ``signums``.
    """
    for signum in signums:
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            raise ConfigurationError(
                f"{url}: {signal.Signals(signum).name} cannot be caught, so it cannot be "
                f"waited for (the kernel acts on it without telling the process); leave it "
                f"out of the signals to wait for",
                endpoint=url,
            )


def warn_taken_over(signum: int, previous: object, url: str) -> None:
    """Warn when ipcwire's handler for ``signum`` replaces a Python handler someone else
    installed (``previous``: a server framework's, such as uvicorn's): that handler no longer
    runs, and with it the framework's own shutdown (its draining of requests in flight).
    Python's default handlers, asyncio's own and ipcwire's are not worth a word."""
    if not callable(previous) or previous is signal.default_int_handler:
        return
    target = previous.func if isinstance(previous, functools.partial) else previous
    module = getattr(target, "__module__", None) or ""
    if module.startswith(("ipcwire", "asyncio")):  # (asyncio.run()'s SIGINT handler too)
        return
    name = getattr(target, "__qualname__", None) or repr(target)
    warnings.warn(
        f"{url}: ipcwire now handles {signal.Signals(signum).name}, for which {module}."
        f"{name} was installed: that handler does not run until ipcwire's is removed, so a "
        f"server framework's own shutdown (uvicorn's draining of requests in flight, say) no "
        f"longer starts. In an ASGI app, close channels and listeners in the lifespan's "
        f"shutdown instead of using graceful_shutdown() or a signal: listener",
        RuntimeWarning,
        stacklevel=5,  # (graceful_shutdown()'s caller)
    )


def target_pid(target: Any) -> int:
    """The pid of an int, a ``subprocess.Popen``, an ``asyncio.subprocess.Process``, a
    ``multiprocessing.Process`` or an ipcwire spawn channel.

    Raises:
        ConfigurationError: ``target`` has no pid (or the process was not started).
    """
    if isinstance(target, bool):
        raise ConfigurationError(f"{target!r} is not a process")
    found = target if isinstance(target, int) else getattr(target, "pid", None)
    if not isinstance(found, int):
        raise ConfigurationError(
            f"{target!r} is not a process: pass a pid, a Popen, a multiprocessing.Process "
            f"or a spawn() channel"
        )
    pid = found
    if pid <= 0:
        raise ConfigurationError(
            f"pid {pid} would signal a whole process group or every process; pass group=True "
            f"with the group's leader pid instead"
        )
    return pid


def exit_status(target: Any) -> int | None:
    """The exit status of a process that ``target`` (a ``Popen``, an asyncio ``Process``, a
    ``multiprocessing.Process``, a spawn channel) has already waited for, or None. Its pid is
    free then, and may belong to another process by now: it must not be signalled."""
    if isinstance(target, int):
        return None
    if isinstance(target, subprocess.Popen):
        return target.poll()  # reaps it if it exited: stdlib's send_signal() does the same
    for attr in ("returncode", "exitcode"):
        code = getattr(target, attr, None)
        if isinstance(code, int):
            return code
    return None


def send_signal(target: Any, sig: SignalLike, *, group: bool = False) -> None:
    """Send ``sig`` to a process (or, with ``group``, to its whole process group).

    Raises:
        ChannelBroken: no such process (or group) any more.
        PermissionDenied: the process belongs to another user.
        ConfigurationError: an unknown signal or a target that is not a process.
    """
    pid = target_pid(target)
    signum = parse_signal(sig, f"signal:{'group:' if group else ''}{pid}")
    where = f"{'process group' if group else 'pid'} {pid}"
    if not group and (status := exit_status(target)) is not None:
        raise ChannelBroken(
            f"cannot send {signum.name} to {where}: no such process (it exited already, "
            f"status {status}; its pid may belong to another process by now: nothing was sent)",
            endpoint=f"signal:{pid}",
        )
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError as exc:
        why = "no such process (it exited already)"
        if in_other_pid_namespace():
            why = (
                "no such process in this pid namespace (pids do not cross pid namespaces: "
                "this process is in a container's or sandbox's own, where a process outside "
                "it has no pid, and the same number may be another process); it exited "
                "already, or it runs outside this namespace: signal it from there"
            )
        raise ChannelBroken(
            f"cannot send {signum.name} to {where}: {why}", endpoint=f"signal:{pid}"
        ) from exc
    except PermissionError as exc:
        raise PermissionDenied(
            f"cannot send {signum.name} to {where}: it belongs to another user; run as that "
            f"user (or root)",
            endpoint=f"signal:{pid}",
        ) from exc


def parse_target(endpoint: Endpoint) -> tuple[int, bool]:
    """The pid and whether it names a process group, from ``signal:PID``/``signal:group:PGID``.

    Raises:
        InvalidURL: anything else.
    """
    text = endpoint.path
    group = text.startswith("group:")
    number = text.removeprefix("group:")
    if not number.isdigit() or int(number) <= 0:
        raise InvalidURL(
            f"{endpoint}: connect to signal:PID or signal:group:PGID to send signals; "
            f"listen on signal:USR1,HUP to receive them"
        )
    return int(number), group
