"""What the blocking and asyncio spawn/stdio share: options, argv checks, the Popen call."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from ipcwire._core.codecs import Codec
from ipcwire._core.url import Endpoint
from ipcwire._oserror import translate
from ipcwire.errors import (
    ChannelBroken,
    ConfigurationError,
    IpcwireError,
    PermissionDenied,
    ProgramNotFound,
    ResourceExhausted,
)
from ipcwire.options import ChannelOptions
from ipcwire.pipe._fdutil import close_fds, make_pipe
from ipcwire.spawn._process import group_members
from ipcwire.spawn._stderr import StderrPlan

# One argument of a command line: text, or (a file name in no encoding) bytes, as
# subprocess takes them on POSIX.
Arg: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Env: TypeAlias = Mapping[str, str] | Mapping[bytes, bytes]  # (subprocess takes both)

__all__ = [
    "PARENT_ENV",
    "PARENT_PIDNS_ENV",
    "PARENT_PIPE_ENV",
    "Arg",
    "Started",
    "abandon_started",
    "build_options",
    "describe_argv",
    "kill_started",
    "pid_namespace",
    "pipe_id",
    "start_child",
    "with_url",
]

PARENT_ENV: Final = "IPCWIRE_PARENT_PID"  # tells stdio(exit_on_parent_death=True) who to watch
# ... and which process it is meant for: the one whose stdin is this pipe ("dev:inode"), not a
# process that one starts with pipes of its own and that inherits the environment
PARENT_PIPE_ENV: Final = "IPCWIRE_PARENT_PIPE"
# ... and in which pid namespace that pid is: a child in another one (unshare --pid, bubblewrap)
# cannot see the spawner by its pid, and watches the pipe to it instead
PARENT_PIDNS_ENV: Final = "IPCWIRE_PARENT_PIDNS"


def pid_namespace() -> str | None:
    """This process's pid namespace (``pid:[inode]``), None without /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def pipe_id(fd: int) -> str:
    """What :data:`PARENT_PIPE_ENV` holds for the pipe ``fd`` is an end of."""
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def with_url(options: Any, url: str) -> Any:
    """``options`` naming the started child (``spawn:<argv> [pid N]``), so that every error
    of its channel, the wire format's included, says which child it was."""
    return dataclasses.replace(options, url=url)


def signal_child(pid: int, exited: bool, sig: int | str, group: bool) -> None:
    """``send_signal`` of both drivers: to the child, or (``group``) to its process group.

    Once the child exited, a signal to it alone does nothing (as :mod:`subprocess`), but its
    group may live on in grandchildren: the group's id cannot be reused while the group has
    members, so it is signalled as long as /proc shows some (and none of them has the
    child's pid: that would be another process that took the freed pid).

    Raises:
        ConfigurationError: an unknown signal name.
        PermissionDenied: a member belongs to another user.
    """
    from ipcwire.signals._names import parse_signal, send_signal

    if not exited:
        send_signal(pid, sig, group=group)
        return
    members = group_members(pid) if group else None
    # Members, and none of them the leader: our child's group lives on in its grandchildren.
    # A live process with the child's pid would be a stranger that took the freed pid (and
    # leads a group of its own, with the same number): leave it alone.
    if members and pid not in members:
        with contextlib.suppress(ChannelBroken):  # the last member left meanwhile
            send_signal(pid, sig, group=True)
    else:
        parse_signal(sig)  # an unknown name is still an error


def describe_argv(argv: Sequence[Arg]) -> str:
    """A short readable command line for messages, on one line: an argument with control
    characters (a ``-c`` program's newlines) or bytes that are not text (a bytes argument
    not in the file-system encoding) is shown in bash's ``$'...'`` quoting, its characters
    escaped as repr would and such bytes as ``\\xff``, so the command is still the same in a
    shell."""
    text = " ".join(_quote(os.fsdecode(a)) for a in argv)
    return text if len(text) <= 60 else text[:57] + "..."


def _quote(arg: str) -> str:
    if arg.isprintable():
        return shlex.quote(arg)
    return "$'" + "".join(_escape(c) for c in arg) + "'"


def _escape(c: str) -> str:
    if c in "'\\":
        return "\\" + c
    if c.isprintable():
        return c
    if 0xDC80 <= ord(c) <= 0xDCFF:  # os.fsdecode's stand-in for a byte it cannot decode
        return f"\\x{ord(c) - 0xDC00:02x}"
    if 0x80 <= ord(c) < 0x100:  # repr's \x85 is a byte to bash; \u0085 the same character
        return f"\\u{ord(c):04x}"
    return repr(c)[1:-1]  # \n, \t, \x1b, \u2028


def build_options(
    url: str,
    codec: str | Codec | None,
    framing: str | None,
    max_frame: int | None,
    token: str | bytes | None,
    handshake_timeout: float | None,
) -> ChannelOptions:
    """Options for a stdio channel: JSON lines unless told otherwise.

    ``codec="ndjson"`` is accepted as shorthand for ``framing="ndjson", codec="json"``.

    Raises:
        ConfigurationError: a bad option value.
    """
    if codec == "ndjson":
        if framing not in (None, "ndjson"):
            raise ConfigurationError(f"codec='ndjson' contradicts framing={framing!r}")
        codec, framing = "json", "ndjson"
    kw: dict[str, Any] = {"framing": framing or "ndjson"}
    for name, value in (
        ("codec", codec),
        ("max_frame", max_frame),
        ("token", token),
        ("handshake_timeout", handshake_timeout),
    ):
        if value is not None:
            kw[name] = value
    return ChannelOptions.build(Endpoint(url=url, scheme=url.partition(":")[0]), kw)


class Started:
    """A child started with pipes on its stdin and stdout."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin_w: int, stdout_r: int) -> None:
        self.proc = proc
        self.stdin_w = stdin_w
        self.stdout_r = stdout_r


def start_child(
    argv: Sequence[Arg],
    *,
    env: Env | None,
    cwd: Arg | None,
    stderr: StderrPlan,
    pass_fds: Sequence[int],
    what: str,
) -> Started:
    """Start ``argv`` in its own process group with fresh pipes on stdin/stdout, in a thread
    of its own: Python runs signal handlers in the main thread only, so a Ctrl-C or a
    graceful shutdown's SystemExit cannot come between the fork and the return of the child's
    pid (it did: the pid was lost, and the child ran on with nothing to shut it down). If the
    caller is interrupted while it waits, the child is killed once started.

    Raises:
        ConfigurationError: an empty argv, or ``pass_fds`` naming a closed fd.
        ChannelBroken: the program does not exist or cannot be executed, or ``cwd`` is
            not a directory.
        PermissionDenied, ResourceExhausted: from the OS.
    """
    result: list[Started | BaseException] = []
    claim = threading.Lock()  # whoever takes it first decides: the worker starts, or nobody
    done = threading.Event()

    def run() -> None:
        if not claim.acquire(blocking=False):
            return  # the caller was interrupted before this thread ran: start nothing
        try:
            result.append(
                _start_child(argv, env=env, cwd=cwd, stderr=stderr, pass_fds=pass_fds, what=what)
            )
        except BaseException as exc:
            result.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=run, name="ipcwire spawn", daemon=True)
    try:
        try:
            worker.start()
        except RuntimeError:  # no new threads (interpreter shutdown): start it here
            run()
        done.wait()  # (not join(): an interrupted join can return early on later calls)
    except BaseException:
        if not claim.acquire(blocking=False):  # the worker has begun: let it finish
            done.wait()
            if result and isinstance(result[0], Started):
                abandon_started(result[0], stderr)
        raise
    outcome = result[0]
    if isinstance(outcome, BaseException):
        try:
            raise outcome
        finally:
            del outcome, result  # no reference cycle through the traceback
    return outcome


def abandon_started(started: Started, stderr: StderrPlan | None = None) -> None:
    """Kill and reap a child just started, and close its pipes (and ``stderr``'s): the
    ``spawn()`` that started it was interrupted before its channel existed."""
    kill_started(started.proc)
    close_fds(started.stdin_w, started.stdout_r)
    if stderr is not None:
        stderr.abandon()


def _start_child(
    argv: Sequence[Arg],
    *,
    env: Env | None,
    cwd: Arg | None,
    stderr: StderrPlan,
    pass_fds: Sequence[int],
    what: str,
) -> Started:
    """Start ``argv`` in its own process group with fresh pipes on stdin/stdout.

    Raises:
        ConfigurationError: an empty argv, or ``pass_fds`` naming a closed fd.
        ChannelBroken: the program does not exist or cannot be executed, or ``cwd`` is
            not a directory.
        PermissionDenied, ResourceExhausted: from the OS.
    """
    if isinstance(argv, str | bytes) or not argv:
        stderr.abandon()  # a stderr= path was opened already
        raise ConfigurationError(
            f"spawn() takes the command as a list of arguments, such as ['python', 'agent.py'], "
            f"not {argv!r}"
        )
    try:
        _check_encodable(argv, env, cwd, what)
    except ConfigurationError:
        stderr.abandon()
        raise
    in_r = in_w = out_r = out_w = -1
    try:
        child_env = dict(os.environ) if env is None else str_env(env)
        child_env[PARENT_ENV] = str(os.getpid())
        in_r, in_w = make_pipe()
        child_env[PARENT_PIPE_ENV] = pipe_id(in_r)
        pidns = pid_namespace()
        if pidns is not None:
            child_env[PARENT_PIDNS_ENV] = pidns
        out_r, out_w = make_pipe()
        err_fd = stderr.start()
        proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=in_r,
            stdout=out_w,
            stderr=err_fd,
            env=child_env,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            process_group=0,
            close_fds=True,
        )
    except BaseException as exc:
        close_fds(in_w, out_r)
        stderr.abandon()
        if isinstance(exc, OSError) and not isinstance(exc, IpcwireError):
            raise _start_error(exc, argv, env, cwd, what) from exc
        raise
    finally:
        close_fds(in_r, out_w)
    stderr.after_spawn()
    return Started(proc, in_w, out_r)


def kill_started(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child just started (and its process group) and reap it: ``spawn()`` was
    interrupted before the channel that shuts it down existed."""
    for kill in (os.kill, os.killpg):
        with contextlib.suppress(OSError):
            kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


_CGROUP_ROOT: Final = "/sys/fs/cgroup"


@dataclasses.dataclass(frozen=True, slots=True)
class PidsLimit:
    """The nearest limit on processes and threads among this process's cgroup and its
    ancestors: ``limit`` in ``path`` (the ``pids.max`` file), ``current`` in use there."""

    path: str
    limit: int
    current: int | None


def pids_limit(pid: int | str = "self") -> PidsLimit | None:
    """The ``pids.max`` that limits process ``pid`` (cgroup v1's pids hierarchy, or v2),
    the nearest one set below "max" walking up from its cgroup; None where there is none,
    or it cannot be read."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    where = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            where = os.path.join(_CGROUP_ROOT, "pids") + path  # v1
            break
        if controllers == "" and os.path.exists(os.path.join(_CGROUP_ROOT, "cgroup.controllers")):
            where = _CGROUP_ROOT + path  # v2 (unified at the root)
    if where is None:
        return None
    where = os.path.normpath(where)
    while where.startswith(_CGROUP_ROOT):
        try:
            with open(os.path.join(where, "pids.max")) as f:
                raw = f.read().strip()
        except OSError:
            raw = "max"
        if raw.isdigit():
            try:
                with open(os.path.join(where, "pids.current")) as f:
                    current: int | None = int(f.read())
            except (OSError, ValueError):
                current = None
            return PidsLimit(os.path.join(where, "pids.max"), int(raw), current)
        if where in (_CGROUP_ROOT, os.path.join(_CGROUP_ROOT, "pids")):
            break
        where = os.path.dirname(where)
    return None


def process_limits() -> str:
    """This process's limits on processes and threads, for a message: RLIMIT_NPROC
    (``ulimit -u``) and the cgroup's ``pids.max`` (a container's limit)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    nproc = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    parts = [f"ulimit -u (RLIMIT_NPROC) is {nproc} for uid {os.getuid()}"]
    cg = pids_limit()
    if cg is None:
        parts.append("no cgroup pids.max is set")
    else:
        used = "" if cg.current is None else f", {cg.current} in use"
        parts.append(
            f"the cgroup's pids.max is {cg.limit} ({cg.path}{used}; a container's "
            f"--pids-limit, systemd's TasksMax=)"
        )
    return "; ".join(parts)


def str_env(env: Env) -> dict[str, str]:
    """``env`` with text names and values: bytes as the file-system encoding decodes them
    (with surrogateescape, so the child gets the same bytes back)."""
    return {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()}


def _not_found(prog: str, env: Env | None, cwd: str | None) -> str:
    """What ENOENT from starting ``prog`` meant, and what to do: the cwd is missing, the
    program is (not in PATH, no such file), or it exists and its #! interpreter is not."""
    if cwd is not None and not os.path.exists(cwd):
        return f"the working directory cwd={cwd!r} does not exist; create it, or pass another cwd="
    if "/" in prog:
        path = os.path.join(cwd or "", prog)
        if not os.path.exists(path):
            where = f" (relative to cwd={cwd!r})" if cwd and not os.path.isabs(prog) else ""
            return f"{prog!r} was not found: there is no such file{where}; check the path"
    else:
        dirs = os.get_exec_path(None if env is None else str_env(env))
        found = [p for d in dirs if os.path.isfile(p := os.path.join(d or ".", prog))]
        if not found:
            return (
                f"{prog!r} was not found in PATH ({os.pathsep.join(dirs)}); give its full path, "
                f"or add the directory that holds it to PATH"
                + (" (in env=)" if env is not None else "")
            )
        path = found[0]
    return f"{path!r} exists, but {_missing_interpreter(path)} was not found; install it"


def _not_permitted(name: str) -> str:
    """What EACCES from starting ``name`` most likely meant, and the fix."""
    if os.path.isdir(name):
        return f"{name!r} is a directory, not a program; name the program inside it"
    if os.path.isfile(name) and not os.access(name, os.X_OK):
        return f"{name!r} is not executable; chmod +x it, or run it through its interpreter"
    return (
        f"{name!r} (or a directory on its path) may not be executed by this user, or its "
        f"file system is mounted noexec; check the modes with ls -l, and the mount"
    )


def _missing_interpreter(path: str) -> str:
    """``its #! interpreter '/usr/bin/python9'``, or (no #! line: a binary) its loader."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256)
    except OSError:
        first = b""
    words = first[2:].split() if first.startswith(b"#!") else []
    if words:
        return f"its #! interpreter {os.fsdecode(words[0])!r} (the script's first line)"
    return "its program loader (the ELF interpreter: a binary for another system?)"


def _check_encodable(
    argv: Sequence[Arg],
    env: Env | None,
    cwd: Arg | None,
    what: str,
) -> None:
    """Every argument, ``cwd`` and ``env`` entry must be encodable as the child gets them
    (os.fsencode): under an ASCII locale (LC_ALL=C without UTF-8 mode) non-ASCII text is not.

    Raises:
        ConfigurationError: naming which one, and the fix.
    """
    items: list[tuple[str, object]] = [
        ("the program (argv[0])" if i == 0 else f"argv[{i}]", a) for i, a in enumerate(argv)
    ]
    if cwd is not None:
        items.append(("cwd=", cwd))
    if env is not None:
        items += [(f"env= (the name {k!a})", k) for k in env]
        items += [(f"env= (the value of {k!a})", v) for k, v in env.items()]
    for name, value in items:
        try:
            os.fsencode(value)  # type: ignore[arg-type]
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"cannot start {what}: {name} {exc.object!a} cannot be encoded in this "
                f"locale's file-system encoding ({sys.getfilesystemencoding()}; "
                f"{exc.object[exc.start]!a} at position {exc.start}), which a child's "
                f"arguments, environment and working directory are passed in: run with a "
                f"UTF-8 locale (LC_ALL=C.UTF-8) or PYTHONUTF8=1, or pass it as bytes "
                f"(its .encode(), UTF-8)"
            ) from None
        except TypeError:
            pass  # not a str, bytes or path: subprocess says so


def _start_error(
    exc: OSError,
    argv: Sequence[Arg],
    env: Env | None,
    cwd: Arg | None,
    what: str,
) -> IpcwireError:
    """The typed error for a failed start, with what to check."""
    endpoint = f"spawn:{what}"
    name = exc.filename or os.fsdecode(argv[0])
    if isinstance(exc, FileNotFoundError):
        why = _not_found(os.fsdecode(argv[0]), env, None if cwd is None else os.fsdecode(cwd))
        return ProgramNotFound(f"cannot start {what}: {why}", endpoint=endpoint)
    if isinstance(exc, PermissionError):
        return PermissionDenied(
            f"cannot start {what}: permission denied: {_not_permitted(name)}",
            endpoint=endpoint,
        )
    if exc.errno in (errno.EMFILE, errno.ENFILE):  # the limit by name, as everywhere else
        return translate(exc, endpoint, "starting")
    if exc.errno == errno.EAGAIN:  # fork/clone: RLIMIT_NPROC or the cgroup's pids.max
        return ResourceExhausted(
            f"cannot start {what}: {exc.strerror or exc}: this process is at its limit of "
            f"processes and threads ({process_limits()}); raise that limit, or end processes "
            f"or threads it no longer needs, and try again",
            endpoint=endpoint,
        )
    if exc.errno == errno.ENOMEM:
        return translate(exc, endpoint, "starting")
    if exc.errno == errno.EBADF:
        return ConfigurationError(
            f"cannot start {what}: pass_fds holds a file descriptor that is not open "
            f"({exc.strerror or exc})"
        )
    hint = {
        errno.ENOEXEC: "it is not a program this system can run (a script without a #! line?)",
        errno.ENOTDIR: f"a path component is not a directory (the program, or cwd={cwd!r})",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return ChannelBroken(f"cannot start {what}: {name!r}: {hint}", endpoint=endpoint)
