"""``ipcwire cat``: socat for every mechanism. stdin -> channel -> stdout.

Each line of stdin is one message (parsed as JSON when the codec is json or msgpack); each
message received is written as one line (compact JSON for those codecs). After stdin ends,
messages still arriving are printed until the peer closes or ``--wait`` seconds pass quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import math
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any, Final

import msgspec

import ipcwire
from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire.channel import Channel
from ipcwire.errors import EndOfChannel, IpcwireError, LocalProtocolError, Timeout

__all__ = ["add_parser", "run"]


TOKEN_ENV: Final = "IPCWIRE_TOKEN"  # noqa: S105 (its name, not a token)

DESCRIPTION: Final = """\
Pipe stdin to a channel and the channel to stdout: socat for every ipcwire mechanism.

Each line of stdin is one message (parsed as JSON with --codec json or msgpack); each message
received is written as one line (compact JSON for those codecs). After stdin ends, messages
still arriving are printed until the peer closes or --wait seconds pass with none.
"""

EPILOG: Final = """\
environment: IPCWIRE_TOKEN, the token when neither --token nor --token-file is given.
exit status: 0 done; 1 an error (the message names the endpoint and the fix); 2 bad
arguments; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Examples: docs/cat.md.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "cat",
        help="pipe stdin/stdout through any channel (socat for ipcwire)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", help="endpoint URL, e.g. unix:///tmp/app.sock or tcp://127.0.0.1:7000")
    p.add_argument(
        "-l",
        "--listen",
        action="store_true",
        help="listen at URL and accept one client (default: connect to URL)",
    )
    p.add_argument(
        "--codec",
        default=None,
        help="bytes, json or msgpack (default: bytes; json with --framing ndjson)",
    )
    p.add_argument(
        "--framing",
        default=None,
        choices=("length", "ndjson"),
        help="length: a 4-byte length before each message; ndjson: one JSON value per line, "
        "no handshake without a token, for peers in any language (default: length)",
    )
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--token",
        default=None,
        help="shared token, both sides must use it; on the command line other users see it "
        f"(ps, /proc): prefer --token-file or {TOKEN_ENV} (default: {TOKEN_ENV}, else none)",
    )
    secret.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the token from PATH (its first line; a file others can read is refused, "
        "one its group can read is used with a warning; default: none)",
    )
    p.add_argument(
        "--timeout",
        type=_reconnect_seconds,
        default=None,
        metavar="SECONDS",
        help="connecting: seconds to connect (default: 10; the handshake after it has at most "
        "10 s, or ?handshake_timeout=SECONDS in the URL); with --listen: seconds to wait for a "
        "client (default: no limit, wait until interrupted); inf: no limit",
    )
    p.add_argument(
        "--reconnect",
        type=_reconnect_seconds,
        default=None,
        metavar="SECONDS",
        help="while nothing listens yet, keep trying to connect this long, with backoff "
        "(inf: until it is up; default: try once)",
    )
    p.add_argument(
        "--wait",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="after stdin ends, seconds to wait for replies (inf: until the peer closes; "
        "default: 2)",
    )
    return p


def _reconnect_seconds(text: str) -> float:
    """As :func:`_seconds`, but ``inf`` stays infinite (no limit), not None: None is the
    default of --timeout (connect()'s 10 s; no limit for accept)."""
    value = _seconds(text)
    return math.inf if value is None else value


def _seconds(text: str) -> float | None:
    """A number of seconds, 0 or more; ``inf`` is no limit (None)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more, or inf)")
    return None if math.isinf(value) else value


def _encode_line(line: bytes, codec: str) -> Any:
    if codec == "names":  # a signal's name or number, as text: "USR1", "SIGTERM", "10"
        return line.decode(errors="replace").strip()
    if codec == "bytes":
        return line
    return msgspec.json.decode(line)


def _msgpack_refuses(msg: Any) -> str | None:
    """Why msgpack cannot carry a JSON value (an integer over 64 bits), or None."""
    try:
        msgspec.msgpack.encode(msg)
    except (OverflowError, TypeError, msgspec.EncodeError) as exc:
        return str(exc)
    return None


def _format(msg: Any, codec: str) -> bytes:
    if codec == "names":  # a signal: its name (bytes(signal.SIGUSR1) was 10 NUL bytes)
        return str(getattr(msg, "name", msg)).encode()
    if codec == "bytes":
        return msg if isinstance(msg, bytes) else bytes(msg)
    return msgspec.json.encode(msg)


def _stdin_lines(fd: int) -> Iterator[bytes]:
    """Lines from a raw fd. os.read holds no buffered-IO lock, so the reading thread can be
    abandoned at exit while blocked (a BufferedReader would abort interpreter shutdown)."""
    pending = b""
    while chunk := os.read(fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def _pump_stdin(ch: Channel, codec: str, fd: int, errors: list[BaseException]) -> None:
    try:
        for raw in _stdin_lines(fd):
            line = raw.rstrip(b"\r")
            try:
                msg = _encode_line(line, codec)
            except DECODE_ERRORS as exc:
                print(f"ipcwire cat: skipped a line that is not JSON: {exc}", file=sys.stderr)
                continue
            if codec == "names" and not msg:
                continue  # a blank line names no signal
            why = _msgpack_refuses(msg) if codec == "msgpack" else None
            if why is not None:
                print(f"ipcwire cat: skipped a line msgpack cannot carry: {why}", file=sys.stderr)
                continue
            ch.send(msg)
    except IpcwireError as exc:
        errors.append(exc)
    except OSError as exc:  # stdin is a directory, or a terminal that went away (EIO)
        errors.append(OSError(f"cannot read stdin: {exc.strerror or exc}"))


def _pipe(ch: Channel, codec: str, wait: float | None, *, one_way: bool = False) -> int:
    """Stdin to ``ch`` (a thread), ``ch`` to stdout, until the channel ends, or stdin ended
    and nothing came for ``wait`` seconds. ``one_way`` (a mechanism that carries messages
    one way): once stdin ended, a side that sent has nothing to wait for."""
    errors: list[BaseException] = []
    done = threading.Event()

    def feed() -> None:
        try:
            # A closed stdin (`ipcwire cat URL <&-`) is None: nothing to send.
            if sys.stdin is not None:
                _pump_stdin(ch, codec, sys.stdin.fileno(), errors)
        finally:
            done.set()

    threading.Thread(target=feed, daemon=True, name="ipcwire cat stdin").start()
    out = sys.stdout.buffer
    while True:
        # While stdin is open, wake up regularly to notice its end; after that, wait --wait.
        ended = done.is_set()
        if ended and one_way and not errors and ch.statistics().messages_sent:
            break  # the sending end of a one-way channel (sse+http's server, a fifo writer)
        try:
            msg = ch.recv(timeout=wait if ended else 0.2)
        except Timeout:
            if ended:
                break
            continue
        except EndOfChannel:
            break
        except LocalProtocolError:
            # This end only sends (a fifo: writer, an sse+http: server, signal:PID): send
            # stdin to its end. A receiving end's send refusal comes from the stdin thread.
            while not done.wait(0.2):
                pass
            break
        try:
            line = _format(msg, codec)
        except (TypeError, msgspec.EncodeError) as exc:
            # msgpack carries what JSON cannot show: keys that are arrays, extension types
            print(f"ipcwire cat: skipped a message JSON cannot show: {exc}", file=sys.stderr)
            continue
        out.write(line + b"\n")
        out.flush()
    if errors:
        print(f"ipcwire cat: {errors[0]}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.codec:
        options["codec"] = args.codec
    if args.framing:
        options["framing"] = args.framing
    try:
        token = _token(args)
    except _Usage as exc:
        print(f"ipcwire cat: {exc}", file=sys.stderr)
        return 2
    if token is not None:  # (an empty one is refused by connect() and listen())
        options["token"] = token
    codec = args.codec or ("json" if args.framing == "ndjson" else "bytes")
    if codec not in ("bytes", "json", "msgpack"):
        print("ipcwire cat: --codec must be bytes, json or msgpack", file=sys.stderr)
        return 2
    if codec == "bytes" and _carries_no_payload(args.url):
        codec = "names"  # signal: lines are signal names, each received signal its name
    with _sigterm_unwinds():
        return _run(args, options, codec)


class _Usage(Exception):
    """A bad argument: its message is printed and cat exits 2."""


def _token(args: argparse.Namespace) -> str | bytes | None:
    """The token from --token, --token-file or $IPCWIRE_TOKEN, in that order; None: none.

    Raises:
        _Usage: the file cannot be read, others can read or write it, or it is empty; or the
            variable is set but empty (taken for no token, a listener would let anyone in).
    """
    if args.token is not None:
        return str(args.token)
    if args.token_file is not None:
        return _token_from_file(args.token_file)
    value = os.environ.get(TOKEN_ENV)
    if value == "":
        raise _Usage(
            f"{TOKEN_ENV} is set but empty: unset it for no token, or put the shared token in it"
        )
    return value


def _token_from_file(path: str) -> bytes:
    """The first line of ``path``. Others must not be able to read or write it (as ssh does for
    a private key: a token every user can read proves nothing, and one every user can write is
    theirs to choose); its group may, with a warning, since sharing a token with a group is how
    two users' processes authenticate each other (a socket with mode=0o660 and a shared group).
    A pipe (``--token-file <(pass show app)``) has no such mode and is read as it is."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise _Usage(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        mode = stat.S_IMODE(st.st_mode)
        others, group = mode & 0o006, (mode & 0o060) >> 3
        if others:
            raise _Usage(
                f"the token file {path} is {_how(others)} by every user here (mode "
                f"{mode:04o}), so its token proves nothing: chmod 600 {path} (or 640 to share "
                f"it with a group), then choose a new token if others may have read it"
            )
        if group:
            print(
                f"ipcwire cat: warning: the token file {path} is {_how(group)} by group "
                f"{_group_name(st.st_gid)} (mode {mode:04o}): each of its members can use the "
                f"token; chmod 600 {path} unless that is what you want",
                file=sys.stderr,
            )
    token = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not token:
        raise _Usage(f"the token file {path} is empty: put the shared token on its first line")
    return token


def _how(bits: int) -> str:
    """What the read and write bits of one class (0o006 for others) let it do."""
    return {0o004: "readable", 0o002: "writable"}.get(bits, "readable and writable")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _one_way(url: str) -> bool:
    """Whether the mechanism of ``url`` carries messages one way only."""
    from ipcwire.registry import lookup

    try:
        return not lookup(url.partition(":")[0]).capabilities.bidirectional
    except IpcwireError:
        return False


def _carries_no_payload(url: str) -> bool:
    """Whether the mechanism of ``url`` carries no payload (signal:): its messages are names."""
    from ipcwire.registry import lookup

    try:
        return lookup(url.partition(":")[0]).capabilities.max_message_size == 0
    except IpcwireError:
        return False  # connect() or listen() says what is wrong with the URL


class Terminated(Exception):
    """SIGTERM arrived: unwind (close the channel and listener) and exit 143."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (kill, timeout, a service manager) closes what cat opened, as Ctrl-C does: by
    default it ended the process at once and left the listener's socket file, FIFO or message
    queue behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated

    old = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except Terminated:
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(args: argparse.Namespace, options: dict[str, Any], codec: str) -> int:
    try:
        if args.listen:
            # The listener stays open while the channel is used: closing it ends the channels
            # it accepted on some mechanisms (http, grpc, signal) or removes the FIFO.
            with ipcwire.listen(args.url, **options) as listener:
                print(f"ipcwire cat: listening at {listener.url}", file=sys.stderr, flush=True)
                with listener.accept(timeout=args.timeout) as ch:
                    return _pipe(ch, codec, args.wait, one_way=_one_way(args.url))
        if args.reconnect is not None:
            options["reconnect"] = args.reconnect
        with ipcwire.connect(args.url, timeout=args.timeout, **options) as ch:
            return _pipe(ch, codec, args.wait, one_way=_one_way(args.url))
    except IpcwireError as exc:
        # (the API's advice names its keyword; here it is the command's flag)
        text = str(exc).replace("reconnect=SECONDS", "--reconnect SECONDS")
        print(f"ipcwire cat: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
