"""``ipcwire doctor clipboard:``: is there a display, does it answer, which tool would ipcwire
run, who owns the selection, and does a paste come back in time.

The display: ``?display=``, else ``WAYLAND_DISPLAY`` or ``DISPLAY``. An X display's socket
(/tmp/.X11-unix/XN, or TCP port 6000+N for ``host:N``) is connected to with a deadline and
the X connection set up (with the display's cookie from ``XAUTHORITY`` or ~/.Xauthority when
there is one), which tells "no server" from "refused" (authorization) from "not answering" (a
stopped server: its pid, from /proc). Then, on X11, the selection's owner (``GetSelectionOwner``)
and that client's pid (the X-Resource extension, which reads it from the kernel when the
client connected), and a paste with the tool ipcwire would use, limited to
:data:`PASTE_TIMEOUT`: an owner that does not answer makes every ``recv()`` wait.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import subprocess
import time
from typing import TYPE_CHECKING

from ipcwire._core.url import parse_url
from ipcwire._procfs import all_pids, describe_pid, pids_for_inodes, proc_stat, unix_socket_inodes
from ipcwire.doctor._model import Report
from ipcwire.errors import ConfigurationError, MechanismUnavailable

if TYPE_CHECKING:
    from ipcwire.clipboard._tools import Tool

__all__ = ["check_clipboard"]

CONNECT_TIMEOUT = 2.0  # the display's socket, then the X connection setup, then each request
PASTE_TIMEOUT = 3.0
NO_DISPLAY_FIX = (
    "run inside a desktop session, or under a virtual X server: `xvfb-run -a your-command` "
    "(apt install xvfb xclip), or start one (`Xvfb :99 &`) and `export DISPLAY=:99`"
)
_X_TOOLS = ("xclip", "xsel")
_X11_DIR = "/tmp/.X11-unix"  # noqa: S108 - where X servers put their sockets, by convention
_STOPPED = ("T", "t")


class _XError(Exception):
    """The X connection failed: ``kind`` is "missing", "refused", "denied", "timeout"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _X11:
    """A minimal X11 client (little-endian): connection setup and the few requests doctor
    needs, each reply awaited with a deadline. (X Window System Protocol, sections 8-9.)"""

    def __init__(self, display: str, deadline: float) -> None:
        self.deadline = deadline
        host, _, rest = display.rpartition(":")
        self.number = rest.partition(".")[0]
        self.where, self.sock = self._connect(host)
        self.seq = 0
        self._setup()

    def _connect(self, host: str) -> tuple[str, socket.socket]:
        if host in ("", "unix") or host.startswith("/"):
            path = host if host.startswith("/") else f"{_X11_DIR}/X{self.number}"
            errors: list[OSError] = []
            for target in (path, "\0" + path):  # the file, else Linux's abstract name
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self._left())
                try:
                    s.connect(target)
                    return target.replace("\0", "@"), s
                except OSError as exc:
                    s.close()
                    errors.append(exc)
            first = errors[0]
            if isinstance(first, FileNotFoundError):
                raise _XError("missing", f"no {path} (and no abstract socket of that name)")
            if isinstance(first, ConnectionRefusedError):
                raise _XError("stale", f"connect({path}) -> ECONNREFUSED: nothing listens on "
                              "it, the X server died and left it")  # fmt: skip
            raise _XError("refused", f"connect({path}) -> {first.strerror or first}")
        port = 6000 + int(self.number or 0)
        try:
            return f"{host}:{port}", socket.create_connection((host, port), self._left())
        except OSError as exc:
            raise _XError("missing", f"connect({host}:{port}) -> {exc}") from exc

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _XError("timeout", "no answer in time")
        return left

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            ready, _, _ = select.select([self.sock], [], [], self._left())
            if not ready:
                raise _XError("timeout", "no answer in time")
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _XError("refused", "the X server closed the connection")
            buf += chunk
        return buf

    def _setup(self) -> None:
        name, data = _cookie(self.number)
        req = struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(data)) + _pad(name) + _pad(data)
        self.sock.sendall(req)
        head = self._read(8)
        status, reason_len, _, _, extra = struct.unpack("<BBHHH", head)
        body = self._read(extra * 4)
        if status != 1:
            reason = body[: reason_len or len(body)].decode(errors="replace").strip("\0 \n")
            raise _XError("denied", reason or "the X server refused the connection")

    def request(self, opcode: int, data: bytes, minor: int = 0) -> bytes | None:
        """One request and its reply (None for an X error reply)."""
        data = _pad(data)
        self.sock.sendall(struct.pack("<BBH", opcode, minor, 1 + len(data) // 4) + data)
        self.seq += 1
        while True:
            head = self._read(32)
            if head[0] == 0:
                return None
            if head[0] == 1:
                return head + self._read(struct.unpack_from("<I", head, 4)[0] * 4)
            # an event: nothing was selected, but skip any

    def atom(self, name: str) -> int:
        reply = self.request(16, struct.pack("<HH", len(name), 0) + name.encode(), minor=1)
        return struct.unpack_from("<I", reply, 8)[0] if reply else 0

    def selection_owner(self, atom: int) -> int:
        reply = self.request(23, struct.pack("<I", atom))
        return struct.unpack_from("<I", reply, 8)[0] if reply else 0

    def client_pid(self, xid: int) -> int | None:
        """The pid of the client owning ``xid`` (X-Resource 1.2's QueryClientIds)."""
        ext = b"X-Resource"
        reply = self.request(98, struct.pack("<HH", len(ext), 0) + ext)
        if not reply or not reply[8]:
            return None
        # QueryClientIds (minor 4): one spec, the client owning xid, LocalClientPID (mask 2)
        reply = self.request(reply[9], struct.pack("<III", 1, xid, 2), minor=4)
        if not reply or struct.unpack_from("<I", reply, 8)[0] < 1:
            return None
        _, mask, length = struct.unpack_from("<III", reply, 32)
        return struct.unpack_from("<I", reply, 44)[0] if mask == 2 and length == 4 else None

    def close(self) -> None:
        self.sock.close()


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _cookie(number: str) -> tuple[bytes, bytes]:
    """The MIT-MAGIC-COOKIE-1 for display ``number`` of this host from the Xauthority file,
    or empty (no authorization: what Xvfb without -auth accepts)."""
    path = os.environ.get("XAUTHORITY") or os.path.expanduser("~/.Xauthority")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return b"", b""
    host = socket.gethostname().encode()
    off = 0
    while off + 2 <= len(raw):
        family = struct.unpack_from(">H", raw, off)[0]
        off += 2
        fields = []
        for _ in range(4):  # address, display number, auth name, auth data
            (n,) = struct.unpack_from(">H", raw, off)
            fields.append(raw[off + 2 : off + 2 + n])
            off += 2 + n
        addr, num, name, data = fields
        local = family in (256, 65535) and addr in (host, b"")  # FamilyLocal, FamilyWild
        if local and num in (number.encode(), b"") and name == b"MIT-MAGIC-COOKIE-1":
            return name, data
    return b"", b""


def _server_pids(where: str) -> list[int]:
    return pids_for_inodes(unix_socket_inodes(where)) if where.startswith(("/", "@")) else []


def _serving_tools(display: str, selection: str) -> list[int]:
    """Processes of xclip or xsel serving ``selection`` on ``display`` (copy mode): a copy tool
    forks and its child serves the content, while the X server names the parent that
    connected, which has exited by then."""
    out = []
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.partition(b"=")[::2] for e in f.read().split(b"\0") if e)
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) not in _X_TOOLS:
            continue
        where = env.get(b"DISPLAY", b"").decode(errors="replace")
        for flag in ("-display", "-d", "--display"):
            if flag in argv[:-1]:
                where = argv[argv.index(flag) + 1]
        if where != display or any(a in argv for a in ("-o", "-out", "--output", "-O")):
            continue
        if os.path.basename(argv[0]) == "xclip":
            sel = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-selection",
                        "-sel", "-se")), "primary")  # fmt: skip
            ok = bool(sel) and selection.startswith(sel)
        else:
            ok = ("--clipboard" in argv or "-b" in argv) == (selection == "clipboard")
        if ok:
            out.append(pid)
    return out


def _who(pid: int) -> str:
    st = proc_stat(pid)
    return describe_pid(pid) + (", stopped" if st and st.state in _STOPPED else "")


def check_clipboard(url: str = "clipboard:") -> Report:
    """Diagnose ``clipboard:`` (its ``display=``, ``tool=`` and ``selection=`` options too).

    Raises:
        InvalidURL: not a clipboard: URL.
    """
    report = Report(url)
    params = parse_url(url).params
    display = params.get("display") or None
    selection = params.get("selection") or "clipboard"
    env_wayland = os.environ.get("WAYLAND_DISPLAY")
    env_x = os.environ.get("DISPLAY")
    ev = [f"WAYLAND_DISPLAY={env_wayland or '(not set)'}", f"DISPLAY={env_x or '(not set)'}"]
    if display:
        ev.append(f"display={display}")
    wayland = display if display and display.startswith("wayland") else (
        None if display else env_wayland)  # fmt: skip
    x_display = display if display and not wayland else (None if display else env_x)
    tools = {t: shutil.which(t) for t in (*_X_TOOLS, "wl-copy", "wl-paste", "pbcopy")}
    ev.append("tools: " + ", ".join(f"{t} {'at ' + p if p else 'missing'}"
                                    for t, p in tools.items()))  # fmt: skip
    if not wayland and not x_display and os.uname().sysname != "Darwin":
        report.add("clipboard.no_display", "problem", "no display: neither WAYLAND_DISPLAY nor "
                   "DISPLAY is set, so no clipboard tool can run", ev, NO_DISPLAY_FIX)  # fmt: skip
        return report
    ok = True
    if wayland:
        ok = _check_wayland(report, wayland, ev)
    if x_display and not (wayland and ok):
        ok = _check_x(report, x_display, selection, ev)
    if not ok:
        return report
    tool = _check_tool(report, params.get("tool") or None, selection, display, ev)
    if tool is not None:
        _paste(report, tool, ev)
    return report


def _check_wayland(report: Report, name: str, ev: list[str]) -> bool:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    path = name if name.startswith("/") else os.path.join(runtime, name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(path)
        except OSError as exc:
            report.add("clipboard.no_wayland", "problem", f"the Wayland compositor's socket "
                       f"{path} does not answer ({exc.strerror or exc})",
                       [*ev, f"connect({path}) -> {exc}"], "log in to the desktop session "
                       "again, or unset WAYLAND_DISPLAY to use X11 (DISPLAY)")  # fmt: skip
            return False
    report.add("clipboard.display", "ok", f"the Wayland compositor answers at {path}", ev)
    return True


def _check_x(report: Report, display: str, selection: str, ev: list[str]) -> bool:
    try:
        x = _X11(display, time.monotonic() + CONNECT_TIMEOUT)
    except (_XError, ValueError) as exc:
        kind = exc.kind if isinstance(exc, _XError) else "missing"
        _x_failed(report, display, kind, str(exc), ev)
        return False
    pids = _server_pids(x.where)
    server = f"X server at {x.where}: " + ("; ".join(map(_who, pids)) or "pid not visible")
    try:
        report.add("clipboard.display", "ok", f"the X server on {display} accepts this client",
                   [*ev, server], pids=pids)  # fmt: skip
        ev = [server]
        atom = x.atom(selection.upper())
        owner = x.selection_owner(atom) if atom else 0
        if not owner:
            report.add("clipboard.owner", "info", f"nobody owns the {selection} selection: it "
                       "is empty (recv() waits for the next copy)", ev)  # fmt: skip
            return True
        pid = x.client_pid(owner)
        owner_ev = [*ev, f"GetSelectionOwner({selection.upper()}) -> window {owner:#x}; "
                    f"X-Resource client pid -> {pid}"]  # fmt: skip
        pids = [pid] if pid else []
        if pid and not os.path.exists(f"/proc/{pid}"):
            pids = _serving_tools(display, selection)
            owner_ev.append(f"pid {pid} has exited (a copy tool forks, its child serves the "
                            f"content); {', '.join(_X_TOOLS)} processes serving {selection} "
                            f"on {display}: {', '.join(map(str, pids)) or 'none'}")  # fmt: skip
        who = "; ".join(map(_who, pids)) or "a client whose process is not visible here"
        stopped = [p for p in pids if (st := proc_stat(p)) and st.state in _STOPPED]
        if stopped:
            report.add("clipboard.owner_stopped", "problem", f"the {selection} selection is "
                       f"owned by {who}: every paste waits for it", owner_ev,
                       f"kill -CONT {stopped[0]} (or kill {stopped[0]}: the selection is then "
                       "empty)", pids=stopped)  # fmt: skip
        else:
            report.add("clipboard.owner", "info", f"the {selection} selection is owned by "
                       f"{who}", owner_ev, pids=pids)  # fmt: skip
    except _XError as exc:
        _x_failed(report, display, exc.kind, str(exc), ev)
        return False
    finally:
        x.close()
    return True


def _x_failed(report: Report, display: str, kind: str, detail: str, ev: list[str]) -> None:
    number = display.rpartition(":")[2].partition(".")[0]
    ev = [*ev, detail]
    if kind == "missing":
        report.add("clipboard.no_x_server", "problem", f"no X server runs on {display}",
                   ev, f"start one (`Xvfb :{number or 99} &`), or set DISPLAY "
                   "to the display of a running X server (`ls /tmp/.X11-unix`)")  # fmt: skip
    elif kind == "denied":
        report.add("clipboard.x_refused", "problem", f"the X server on {display} refused "
                   f"this client: {detail}", ev, "set XAUTHORITY to the file holding this "
                   "display's cookie (the desktop user's ~/.Xauthority), or, as that user, "
                   "allow yours: xhost +SI:localuser:$(id -un)")  # fmt: skip
    elif kind == "timeout":
        path = f"{_X11_DIR}/X{number}"
        pids = _server_pids(path) or _server_pids("@" + path)
        stopped = [p for p in pids if (st := proc_stat(p)) and st.state in _STOPPED]
        fix = f"the X server is stopped: kill -CONT {stopped[0]}" if stopped else (
            "the X server is hung: restart it")  # fmt: skip
        report.add("clipboard.x_not_answering", "problem", f"the X server on {display} took "
                   f"the connection but did not answer within {CONNECT_TIMEOUT:g} s",
                   [*ev, "X server: " + ("; ".join(map(_who, pids)) or "pid not visible")],
                   fix, pids=pids)  # fmt: skip
    elif kind == "stale":
        report.add("clipboard.no_x_server", "problem", f"no X server on {display}: its socket "
                   f"is left from one that died", ev, f"start one again (`Xvfb :{number} &`; "
                   f"it replaces the stale socket), or set DISPLAY to a running one")  # fmt: skip
    else:
        report.add("clipboard.no_x_server", "problem", f"cannot connect to the X server on "
                   f"{display}: {detail}", ev, "check DISPLAY")  # fmt: skip


def _check_tool(
    report: Report, name: str | None, selection: str, display: str | None, ev: list[str]
) -> Tool | None:
    from ipcwire.clipboard._tools import INSTALL_HINT, pick_tool

    try:
        tool = pick_tool(name, selection=selection, display=display)
    except MechanismUnavailable as exc:
        report.add("clipboard.no_tool", "problem", "no clipboard tool ipcwire can use is "
                   "installed for this display", [*ev, str(exc)], INSTALL_HINT)  # fmt: skip
        return None
    except ConfigurationError as exc:
        report.add("clipboard.bad_option", "problem", str(exc), ev, "fix the URL's options")
        return None
    report.add("clipboard.tool", "ok", f"ipcwire would use {tool.describe()}",
               [" ".join(tool.copy), " ".join(tool.paste)], tool=tool.name)  # fmt: skip
    return tool


def _paste(report: Report, tool: Tool, ev: list[str]) -> None:
    started = time.monotonic()
    try:
        out = subprocess.run(list(tool.paste), env=dict(tool.env), capture_output=True,
                             timeout=PASTE_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        report.add("clipboard.paste_hangs", "problem", f"a paste ({' '.join(tool.paste)}) did "
                   f"not return within {PASTE_TIMEOUT:g} s: the selection's owner does not "
                   "answer, so every recv() waits", ev, "end the owner (see clipboard.owner), "
                   "or copy something new to take the selection over")  # fmt: skip
        return
    took = time.monotonic() - started
    detail = out.stderr.decode(errors="replace").strip()
    line = f"{' '.join(tool.paste)} -> exit {out.returncode}, {len(out.stdout)} bytes, " \
        f"{took * 1000:.0f} ms" + (f": {detail}" if detail else "")  # fmt: skip
    report.add("clipboard.paste", "ok", f"a paste returns in {took * 1000:.0f} ms", [line],
               size=len(out.stdout))  # fmt: skip
