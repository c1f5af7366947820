"""The registry of mechanisms: one spec per mechanism, keyed by URL scheme.

Each mechanism folder declares ``SPEC = MechanismSpec(...)`` once. Everything that needs to
know what a mechanism can do (``ipcwire platforms``, the advisor, the docs' feature matrix,
the benchmark, the conformance suite) reads it from here; nothing restates it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Final

from ipcwire._oserror import translate
from ipcwire.errors import InvalidURL, MechanismUnavailable

__all__ = [
    "BUILTIN_MECHANISMS",
    "Capabilities",
    "MechanismSpec",
    "lookup",
    "mechanisms",
    "register",
]

# Modules that define SPEC, in the order `ipcwire platforms` lists them.
BUILTIN_MECHANISMS: Final[tuple[str, ...]] = (
    "ipcwire.unix",
    "ipcwire.tcp",
    "ipcwire.shm",
    "ipcwire.ws",
    "ipcwire.sse",
    "ipcwire.http",
    "ipcwire.grpc",
    "ipcwire.pipe",
    "ipcwire.fifo",
    "ipcwire.udp",
    "ipcwire.signals",
    "ipcwire.mq",
    "ipcwire.spool",
    "ipcwire.dbus",
    "ipcwire.clipboard",
    "ipcwire.xpc",
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a mechanism can do. The conformance suite skips checks only by these."""

    bidirectional: bool = True
    reliable: bool = True
    ordered: bool = True
    message_boundaries: bool = True
    max_message_size: int | None = None  # None: limited only by max_frame
    crosses_machines: bool = False
    browser: bool = False
    needs_daemon: bool = False
    durable: bool = False
    zero_copy: bool = False
    multi_client: bool = True  # one listener serves several channels at once
    peer_credentials: bool = False  # PeerInfo carries pid/uid/gid from the kernel
    end_of_channel: bool = True  # a peer's close ends the channel (False: a shared queue)
    # a peer that failed (a with block or handler left by an exception, a killed process) ends
    # the channel with ChannelBroken, not the EndOfChannel of a clean close
    tells_failure: bool = False
    wait_policies: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ("linux", "darwin", "freebsd")

    def as_dict(self) -> dict[str, object]:
        """The capabilities as plain data (for JSON and tables)."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class MechanismSpec:
    """One mechanism: its URL scheme(s), capabilities, drivers and requirements.

    ``blocking`` and ``aio`` are module paths, imported only when the mechanism is used, so a
    mechanism whose library is missing still registers and can say how to install it.
    """

    scheme: str
    title: str
    summary: str
    capabilities: Capabilities
    blocking: str
    aio: str | None = None
    aliases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # importable modules needed
    extra: str | None = None  # pip extra that installs them
    docs: str = ""
    example_url: str = ""
    # What the URL's query may set beyond the common options (codec, framing, max_frame,
    # token, handshake_timeout, and connect's timeout and reconnect); any other name in a
    # query is refused (ConfigurationError) before anything is opened.
    query_options: tuple[str, ...] = ()
    schemes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", (self.scheme, *self.aliases))

    def unavailable_reason(self) -> str | None:
        """Why this mechanism cannot be used here, or None when it can."""
        if not any(sys.platform.startswith(p) for p in self.capabilities.platforms):
            platforms = ", ".join(self.capabilities.platforms)
            # a package with NO_DRIVER (xpc) has no driver on its own platforms either
            package = sys.modules.get(self.blocking.rpartition(".")[0])  # imported by now
            no_driver = getattr(package, "NO_DRIVER", None)
            if isinstance(no_driver, str):
                return (
                    f"{self.title} is not available on {sys.platform} (it exists only on "
                    f"{platforms}), and {no_driver}"
                )
            return f"{self.title} is not available on {sys.platform}; it works on {platforms}"
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                hint = f"pip install 'ipcwire[{self.extra}]'" if self.extra else f"install {module}"
                return f"{self.title} needs the Python package {module!r}: {hint}"
        return None

    def package(self) -> ModuleType | None:
        """The mechanism's package (``ipcwire.shm``), or None when it cannot be imported."""
        try:
            return importlib.import_module(self.blocking.rpartition(".")[0])
        except ImportError:
            return None

    def unavailable_here(self) -> str | None:
        """Why this mechanism cannot be used on this machine now, or None: the registry's
        reason (:meth:`unavailable_reason`: platform, Python packages), then the package's own
        ``probe()`` (a session bus, a display, a kernel feature). What ``ipcwire platforms``,
        ``ipcwire doctor`` and ``ipcwire choose`` (for this machine) all say."""
        reason = self.unavailable_reason()
        if reason is not None:
            return reason
        probe = getattr(self.package(), "probe", None)
        if probe is None:
            return None
        try:
            found = probe()
        except Exception as exc:  # a probe must never break the caller's report
            return f"its check failed: {exc}"
        return found if isinstance(found, str) else None

    def load(self, flavour: str) -> ModuleType:
        """Import the blocking or asyncio driver module.

        Raises:
            MechanismUnavailable: wrong platform, missing library, or no driver of that flavour.
        """
        reason = self.unavailable_reason()
        if reason is not None:
            raise MechanismUnavailable(reason)
        path = self.blocking if flavour == "blocking" else self.aio
        if path is None:
            raise MechanismUnavailable(f"{self.title} has no {flavour} driver")
        return importlib.import_module(path)


_SPECS: dict[str, MechanismSpec] = {}
_ORDER: list[MechanismSpec] = []
_loaded = False
_loading = False
_load_lock = threading.RLock()


def register(spec: MechanismSpec) -> None:
    """Add a mechanism (third-party mechanisms may call this too)."""
    for scheme in spec.schemes:
        existing = _SPECS.get(scheme)
        if existing is not None and existing is not spec and existing.title != spec.title:
            raise ValueError(f"scheme {scheme!r} is already registered by {existing.title}")
        _SPECS[scheme] = spec
    if spec not in _ORDER:
        _ORDER.append(spec)


def _load_builtins() -> None:
    """Register the built-in mechanisms, once. If an import fails (EMFILE, say), the error
    propagates and the next call tries again: the registry is never left half-empty for the
    rest of the process."""
    global _loaded, _loading
    if _loaded:
        return
    with _load_lock:
        if _loaded or _loading:  # done by another thread, or asked again by an import below
            return
        _loading = True
        try:
            for path in BUILTIN_MECHANISMS:
                module = importlib.import_module(path)
                specs = getattr(module, "SPECS", None) or (module.SPEC,)
                for spec in specs:
                    register(spec)
            _loaded = True
        finally:
            _loading = False


def _builtins_loaded(url: str | None) -> None:
    """:func:`_load_builtins`, its OSError (out of descriptors while importing a mechanism's
    module, say) as the typed error the API promises (ResourceExhausted)."""
    try:
        _load_builtins()
    except OSError as exc:
        raise translate(exc, url or "ipcwire", "loading the mechanisms for") from exc


def mechanisms() -> list[MechanismSpec]:
    """Every registered mechanism, in a stable order."""
    _builtins_loaded(None)
    return list(_ORDER)


def lookup(scheme: str, *, url: str | None = None) -> MechanismSpec:
    """The mechanism for a URL scheme (``url``: the whole URL, for the error).

    Raises:
        InvalidURL: no mechanism has that scheme; the message names the URL and the nearest
            scheme, if one is near.
    """
    _builtins_loaded(url)
    spec = _SPECS.get(scheme.lower())
    if spec is None:
        known = sorted(_SPECS)
        near = [k for k in known if k.startswith(scheme.lower() + "+")]
        near += difflib.get_close_matches(scheme.lower(), known, n=2, cutoff=0.6)
        hint = f"did you mean {near[0]}:? " if near else ""
        where = f" of {url}" if url else ""
        raise InvalidURL(
            f"no mechanism handles the scheme {scheme!r}{where}; {hint}known schemes: "
            f"{', '.join(known)} (`ipcwire platforms` says which work here)",
            endpoint=url,
        )
    return spec
