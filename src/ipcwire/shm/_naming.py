"""``shm://`` URLs and the shared-memory options (no I/O besides making the socket directory).

``shm://name`` names a listener; its Unix socket (the rendezvous, and each connection's
liveness signal) lives at ``$XDG_RUNTIME_DIR/ipcwire/shm.NAME.sock``, or, without a usable
runtime directory, in the private directory ``/tmp/ipcwire-UID/`` (mode 0700, checked to be
ours). ``shm:///abs/path.sock`` puts the socket at an explicit path instead.

Options (keyword arguments, or the URL's query as defaults):

* ``capacity``: data bytes of each ring (one per direction), a power of two from 4 KiB to
  1 GiB; ``"64K"``, ``"4M"`` and ``"1MiB"`` are understood; a pair ``(to_server,
  from_server)`` (in the URL's query ``64K,16M``) sizes the two directions apart. Only the
  connecting side chooses (it allocates the memory): ``listen(capacity=...)`` is refused
  with a ConfigurationError saying so (a ``capacity`` in the URL's query is left to the
  connecting side, so one URL serves both). Default 1 MiB each way. Messages up to a quarter
  ring travel as one record; longer ones are split and reassembled.
* ``policy``: how a blocked call waits: ``"spin"``, ``"park"`` or ``"hybrid"`` (default).
* ``spin_us``: how long ``hybrid`` spins before parking (default 50 microseconds; 0 on a
  one-CPU machine, where spinning only delays the peer that has to run to answer: measured
  119 µs instead of 6 µs per round trip with both processes on one CPU; processes pinned to
  one CPU together should use ``policy="park"``).
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire.errors import (
    ConfigurationError,
    ConnectionRefused,
    InvalidURL,
    PermissionDenied,
    ResourceExhausted,
)
from ipcwire.shm import _layout as L

__all__ = [
    "DEFAULT_CAPACITY",
    "ShmOptions",
    "default_spin_us",
    "parse_size",
    "shm_options",
    "socket_path",
    "where_else",
]

DEFAULT_CAPACITY: Final = 1 << 20  # data bytes per direction, per connection
MAX_CAPACITY: Final = 1 << 30
DEFAULT_SPIN_US: Final = 50.0
MAX_SOCKET_PATH: Final = 107
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True, slots=True)
class ShmOptions:
    """The shared-memory options of one endpoint, validated."""

    capacity: tuple[int, int] = (DEFAULT_CAPACITY, DEFAULT_CAPACITY)  # (to server, from)
    policy: str = "hybrid"
    spin_us: float = DEFAULT_SPIN_US

    @property
    def ring_kw(self) -> dict[str, Any]:
        """Keyword arguments for the rings of a link."""
        return {"policy": self.policy, "spin_ns": int(self.spin_us * 1000)}


def default_spin_us() -> float:
    """How long ``hybrid`` spins unless told: :data:`DEFAULT_SPIN_US`, or 0 (park at once)
    on a machine with one CPU, where a spinning waiter holds the CPU its peer needs until
    the scheduler preempts it. (Two processes pinned to the same CPU of a larger machine are
    the same case, but a process cannot see where its peer runs: pass ``policy="park"``.)"""
    return DEFAULT_SPIN_US if (os.cpu_count() or 1) > 1 else 0.0


def parse_size(value: object, what: str = "capacity") -> int:
    """``4096``, ``"64K"``, ``"4M"``, ``"1MiB"`` -> bytes.

    Raises:
        ConfigurationError: not a size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)(?:i?[bB])?\s*", str(value))
    if m is None:
        raise ConfigurationError(f"{what}={value!r} is not a size (write 65536, 64K or 4M)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def shm_options(endpoint: Endpoint, kw: dict[str, Any], *, listening: bool = False) -> ShmOptions:
    """Take ``capacity``, ``policy`` and ``spin_us`` out of ``kw`` (the URL's query gives the
    defaults). ``listening``: for ``listen()``, which takes no ``capacity``.

    Raises:
        ConfigurationError: a bad value, naming the accepted ones; ``capacity`` given to
            ``listen()``.
    """
    q = endpoint.params
    if listening:
        if kw.get("capacity") is not None:
            raise ConfigurationError(
                f"capacity={kw['capacity']!r} for listen({endpoint.url!r}): on shm:// the "
                f"connecting side chooses the ring sizes (it allocates each connection's "
                f"memory), so pass it to connect(): capacity='16M' for both directions, or "
                f"capacity=('64K', '16M') for 64 KiB to the listener and 16 MiB from it"
            )
        kw.pop("capacity", None)
        capacity = (DEFAULT_CAPACITY, DEFAULT_CAPACITY)  # (the connecting side's to choose)
    else:
        capacity = _capacity(kw.pop("capacity", None) or q.get("capacity"), endpoint.url)
    policy = str(kw.pop("policy", None) or q.get("policy", "hybrid"))
    if policy not in L.POLICIES:
        raise ConfigurationError(
            f"policy={policy!r} for {endpoint.url}: use 'spin' (lowest latency, burns a core), "
            f"'park' (sleeps in the kernel) or 'hybrid' (spins spin_us, then parks)"
        )
    raw = kw.pop("spin_us", None)
    if raw is None:
        raw = q.get("spin_us", default_spin_us())
    try:
        spin_us = float(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(f"spin_us for {endpoint.url} must be a number") from None
    if not 0 <= spin_us <= 1e6:
        raise ConfigurationError(f"spin_us={spin_us} for {endpoint.url}: from 0 to 1e6")
    return ShmOptions(capacity=capacity, policy=policy, spin_us=spin_us)


def _capacity(value: object, url: str) -> tuple[int, int]:
    """``capacity=``: one size for both rings, or (to the server, from the server): a pair,
    or in the URL's query two sizes with a comma."""
    if value is None:
        return (DEFAULT_CAPACITY, DEFAULT_CAPACITY)
    if isinstance(value, str) and "," in value:
        value = value.split(",")
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ConfigurationError(
                f"capacity={value!r} for {url}: one size for both directions, or two: "
                f"(to the server, from the server), such as ('64K', '16M')"
            )
        sizes = (parse_size(value[0]), parse_size(value[1]))
    else:
        sizes = (parse_size(value), parse_size(value))
    for size in sizes:
        if not L.MIN_CAPACITY <= size <= MAX_CAPACITY or size & (size - 1):
            raise ConfigurationError(
                f"capacity={size} for {url}: must be a power of two from 4 KiB (4096) to "
                f"1 GiB, such as 64K, 1M or 16M"
            )
    return sizes


def _name(endpoint: Endpoint) -> str:
    rest = endpoint.url.partition(":")[2].partition("?")[0]
    if rest.startswith("//"):
        rest = rest[2:]
    return rest.rstrip("/")


def socket_path(endpoint: Endpoint, *, create_dir: bool = False) -> str:
    """Where the listener's Unix socket is for this URL.

    Raises:
        InvalidURL: no name, a bad name, or a path over the kernel's limit.
        PermissionDenied: the private directory exists but is not safely ours.
        ResourceExhausted: the private directory cannot be made: its file system is full.
    """
    url = endpoint.url
    if endpoint.path.startswith("/") and not endpoint.host:
        path = endpoint.path
    else:
        name = _name(endpoint)
        if not _NAME.fullmatch(name):
            raise InvalidURL(
                f"{url}: write shm://NAME with a NAME of letters, digits, '.', '_' or '-' (up "
                f"to 64), or shm:///absolute/path.sock for an explicit socket path",
                endpoint=url,
            )
        path = os.path.join(_directory(url, create_dir), f"shm.{name}.sock")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise InvalidURL(
            f"{url}: the socket path {path} is over the kernel's limit of {MAX_SOCKET_PATH} "
            f"bytes; use a shorter name or directory",
            endpoint=url,
        )
    return path


def _directory(url: str, create: bool) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _ours(runtime, private=True):
        return _ensure(os.path.join(runtime, "ipcwire"), url, create)
    return _ensure(f"/tmp/ipcwire-{os.getuid()}", url, create)  # noqa: S108 - checked: 0700, ours


def _ours(path: str, private: bool) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not (private and mode & 0o077)


def _ensure(path: str, url: str, create: bool) -> str:
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                parent = os.path.dirname(path)
                raise ResourceExhausted(
                    f"cannot create the socket directory {path} for {url}: {parent} is full "
                    f"({exc.strerror}: no free space or no free inodes; df -h {parent}, df -i "
                    f"{parent}, or over a disk quota); free some there, or set XDG_RUNTIME_DIR "
                    f"to a 0700 directory of yours on another file system, or use "
                    f"shm:///path/of/your/choice.sock on another one",
                    endpoint=url,
                ) from exc
            raise PermissionDenied(
                f"cannot create the socket directory {path} for {url}: {exc.strerror}; set "
                f"XDG_RUNTIME_DIR to a writable 0700 directory of yours, or use "
                f"shm:///path/of/your/choice.sock in a writable directory",
                endpoint=url,
            ) from exc
    if os.path.lexists(path) and not _ours(path, private=True):
        raise PermissionDenied(
            f"{path} (the socket directory for {url}) is not a private directory of uid "
            f"{os.getuid()}: someone else made it, or its mode lets others in. Remove it, or "
            f"set XDG_RUNTIME_DIR, or use shm:///path/of/your/choice.sock",
            endpoint=url,
        )
    return path


_SHARE: Final = (
    "to share a channel between users, listen at shm:///a/directory/both/reach/NAME.sock "
    "with mode=0o660 (and a group both are in) or mode=0o666 with allow_uids=[...], and "
    "connect to that URL"
)


def where_else(refused: ConnectionRefused, endpoint: Endpoint, path: str) -> None:
    """Raise ``refused`` (a connect that found no socket at ``path``, shm://NAME's in this
    user's directory) saying where a listener of that name may be instead, if anywhere; else
    return. shm://NAME is per user, so a server running as another user (or as this one with
    another XDG_RUNTIME_DIR) listens elsewhere. Looks only (an error path): makes nothing."""
    cause = refused.__cause__
    if not (isinstance(cause, OSError) and cause.errno == errno.ENOENT):
        return
    if also := _elsewhere(endpoint, path):
        said = str(refused).rstrip(".")
        raise ConnectionRefused(f"{said}.{also}", endpoint=endpoint.url) from cause


def _elsewhere(endpoint: Endpoint, path: str) -> str:
    if endpoint.path.startswith("/") and not endpoint.host:
        return ""  # an explicit path: nowhere else to look
    base = os.path.basename(path)
    mine = os.path.dirname(path)
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    ours = [f"/tmp/ipcwire-{uid}"] + ([os.path.join(runtime, "ipcwire")] if runtime else [])  # noqa: S108
    for d in ours:
        if d != mine and os.path.lexists(os.path.join(d, base)):
            return (
                f" A socket of that name is in {d}, this user's other directory for shm:// "
                f"names: the server ran with another XDG_RUNTIME_DIR (or none). Give both "
                f"sides the same XDG_RUNTIME_DIR, or use shm://{os.path.join(d, base)}"
            )
    found: list[str] = []
    closed: list[str] = []
    # only the per-user directories (/tmp/ipcwire-UID): not another program's ipcwire-* in
    # /tmp (a benchmark's private bus listed as "uid 0's /tmp/ipcwire-bench-bus-...")
    per_user = glob.glob("/tmp/ipcwire-[0-9]*")  # noqa: S108
    uids = [d for d in per_user if os.path.basename(d).removeprefix("ipcwire-").isdigit()]
    others = uids + glob.glob("/run/user/*/ipcwire")
    for d in sorted(others):
        try:
            owner = os.lstat(d).st_uid
        except OSError:
            continue
        if owner == uid or d in ours:
            continue
        try:
            os.lstat(os.path.join(d, base))
            found.append(f"uid {owner}'s {os.path.join(d, base)}")
        except PermissionError:
            closed.append(f"uid {owner}'s {d}")
        except OSError:
            pass
    where = f"uid {uid} looks in {mine}"
    if found:
        return (
            f" shm://NAME is per user ({where}), and another user has a socket of that "
            f"name ({', '.join(found[:3])}): the server runs as another user; {_SHARE}"
        )
    if closed:
        return (
            f" shm://NAME is per user ({where}): a server running as another user listens "
            f"in that user's directory ({', '.join(closed[:3])}: this user cannot look "
            f"inside); {_SHARE}"
        )
    return ""
