"""ipcwire over D-Bus, without I/O: addresses and options, the interface, the messages, the
handshake's text, and the errors both drivers raise when opening.

A listener owns a bus name and serves interface ``io.ipcwire.Channel1`` at an object path::

    Handshake(s channel, s message) -> (s channel, s reply)   open a channel; the ordinary
                                                              ipcwire handshake, one JSON
                                                              object per call ("" = new)
    Deliver(s channel, ay payload)                            one message; the reply is the
                                                              receiver's acknowledgement
    Close(s channel)                                          end of channel (no reply)
    Fail(s channel, s reason)                                 end of channel after an
                                                              error (no reply; see below)
    signal Event(s topic, ay payload)                         publish/subscribe

Messages to the client go the same way, as method calls to the client's unique connection
name at ``/io/ipcwire/Channel``. The receiver acknowledges a ``Deliver`` when the application
takes the message, and a sender keeps at most ``WINDOW`` messages (``WINDOW_BYTES`` bytes)
unacknowledged, so a slow reader slows the writer instead of filling the bus daemon (which
would refuse messages or disconnect). A peer
whose connection vanishes is seen through the bus's ``NameOwnerChanged`` signal.

**Failure** (docs/errors.md, "Finished, or failed?"): a channel whose ``with`` block (or
``serve()`` handler) was left by an exception ends with ``Fail`` instead of ``Close``, in the
same place (behind every ``Deliver`` already sent), its reason naming the exception's type;
the peer's channel then ends with ``ChannelBroken``. Only when the handshake agreed on it:
both hellos offer ``"goodbye": 1`` (the handshake's flag for "this side says how it ended";
an older ipcwire does not offer it on dbus, and does not know ``Fail``). With an older peer,
a failed client sends no ``Close`` (its connection leaving the bus is ``ChannelBroken``
there), and a failed listener's channel sends ``Close``, as before. A clean end is ``Close``
either way, unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageFlag, MessageType

from ipcwire._core.ending import error_reason, failed_error
from ipcwire._core.framing import MAX_REASON, readable_reason
from ipcwire._core.handshake import ClientHandshake, ServerHandshake
from ipcwire._core.url import Endpoint, parse_url
from ipcwire.channel import PeerInfo
from ipcwire.errors import (
    AddressInUse,
    ChannelBroken,
    ConfigurationError,
    ConnectionRefused,
    InvalidURL,
    IpcwireError,
    MechanismUnavailable,
    PermissionDenied,
    RemoteProtocolError,
)
from ipcwire.options import DEFAULT_CONNECT_TIMEOUT, ChannelOptions, reject_unknown

__all__ = [
    "BUS_NAME",
    "CLIENT_PATH",
    "ERROR_CLOSED",
    "INTERFACE",
    "MAX_MESSAGE",
    "MAX_REASON",
    "SUBSCRIPTION_BUFFER",
    "SYSTEM_CONNECTION_WINDOW",
    "SYSTEM_WINDOW",
    "WINDOW",
    "WINDOW_BYTES",
    "ClientHandshakeCalls",
    "DbusError",
    "Target",
    "address_option",
    "bus_address",
    "check_topic",
    "checked_address",
    "close_call",
    "deliver_call",
    "error_reply",
    "event_signal",
    "fail_call",
    "failure_reason",
    "handshake_call",
    "handshake_failed",
    "handshake_text",
    "handshakes",
    "is_event",
    "name_refused",
    "name_taken",
    "nobody_listening",
    "owner_changed_rule",
    "owns_name",
    "parse_target",
    "peer_failed",
    "peer_from_credentials",
    "peers_left_rule",
    "request_name",
    "resolve",
    "resolve_subscription",
    "user_refused",
    "window",
]

INTERFACE: Final = "io.ipcwire.Channel1"
CLIENT_PATH: Final = "/io/ipcwire/Channel"
ERROR_CLOSED: Final = "io.ipcwire.Error.Closed"
ERROR_REFUSED: Final = "io.ipcwire.Error.Refused"
BUS_NAME: Final = "org.freedesktop.DBus"
BUS_PATH: Final = "/org/freedesktop/DBus"
WINDOW: Final = 1024  # unacknowledged messages a sender may have in flight...
WINDOW_BYTES: Final = 4 * 1024 * 1024  # ...and bytes (one message may always go)
# The system bus refuses a connection's calls beyond 128 awaiting replies (dbus-daemon's
# max_replies_per_connection there; the session bus allows 50000): the refused ones would be
# lost. So there a connection keeps at most SYSTEM_CONNECTION_WINDOW in flight, all its
# channels together (a listener's share its connection), and a channel SYSTEM_WINDOW of them
# (a reader that does not read holds up the others only once several do not).
SYSTEM_WINDOW: Final = 32
SYSTEM_CONNECTION_WINDOW: Final = 100
SUBSCRIPTION_BUFFER: Final = 64 * 1024 * 1024  # events a subscription holds unread, bytes
# The system bus refuses messages over 32 MiB (dbus-daemon's max_message_size); keep headroom.
MAX_MESSAGE: Final = 32 * 1024 * 1024 - 4096
NAME_HAS_NO_OWNER: Final = "org.freedesktop.DBus.Error.NameHasNoOwner"
ACCESS_DENIED: Final = "org.freedesktop.DBus.Error.AccessDenied"  # the bus's policy said no
_DO_NOT_QUEUE: Final = 4  # RequestName flag: fail at once if the name is taken
_PRIMARY_OWNER, _ALREADY_OWNER = 1, 4  # RequestName's answers that mean "it is ours"
HOW_TO_START = (
    "start a session bus with `dbus-run-session -- your-command`, or "
    "`eval $(dbus-launch --sh-syntax)`, or `dbus-daemon --session --fork --print-address` "
    "and export DBUS_SESSION_BUS_ADDRESS=<the address it printed>"
)


def user_refused(address: str, url: str) -> PermissionDenied:
    """The error when the daemon took this process's connection (SASL said OK) and then
    dropped it: its policy does not let this user on the bus."""
    return PermissionDenied(
        f"the D-Bus daemon at {address} took this process's connection (uid {os.getuid()}) "
        f"and then dropped it ({url}): it does not accept this user (a session bus serves the "
        f"user who started it); run as that user, or use a bus of this user's own",
        endpoint=url,
    )


class DbusError(ChannelBroken):
    """An error reply to a D-Bus call (``name`` is the D-Bus error name); both drivers raise
    it (see :func:`error_reply`)."""

    def __init__(self, message: str, *, name: str, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.name = name


@dataclass(frozen=True, slots=True)
class Target:
    """What ``dbus://session/<bus.name>/<object/path>`` names."""

    bus: str  # "session" or "system"
    name: str  # the well-known bus name
    path: str  # the object path

    def describe(self) -> str:
        return f"{self.name} on the {self.bus} bus"


# What D-Bus allows in a bus name's elements and an object path's segments: ASCII only (the
# spec's [A-Za-z0-9_-] and [A-Za-z0-9_]; str.isalnum() would also take "ä" or "²", which
# the daemon and dbus-fast refuse later, in words about something else).
_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_PATH_CHARS: Final = _NAME_CHARS - {"-"}


def _valid_name(name: str) -> bool:
    parts = name.split(".")
    return (
        len(parts) >= 2
        and len(name) <= 255
        and all(p and not p[0].isdigit() and all(c in _NAME_CHARS for c in p) for p in parts)
    )


def parse_target(endpoint: Endpoint) -> Target:
    """Split the URL into bus, name and object path (default: the name with dots as slashes).

    Raises:
        InvalidURL: not ``dbus://session|system/<bus.name>[/object/path]``.
    """
    bus = endpoint.host or "session"
    name, _, rest = endpoint.path.lstrip("/").partition("/")
    path = "/" + rest.rstrip("/") if rest else "/" + name.replace(".", "/")
    if bus not in ("session", "system") or not _valid_name(name):
        raise InvalidURL(
            f"{endpoint.url!r}: write dbus://session/<bus.name>/<object/path> (or system), "
            f"for example dbus://session/org.example.App/org/example/App (a bus name is two "
            f"or more dot-separated elements of ASCII letters, digits, _ and -, none starting "
            f"with a digit)"
        )
    segments = path[1:].split("/")
    if path != "/" and not all(seg and all(c in _PATH_CHARS for c in seg) for seg in segments):
        raise InvalidURL(
            f"{endpoint.url!r}: {path!r} is not a D-Bus object path (segments of ASCII "
            f"letters, digits and _)"
        )
    return Target(bus=bus, name=name, path=path)


def window(target: Target) -> tuple[int, int | None]:
    """How many messages a channel on ``target``'s bus may have unacknowledged, and a
    connection (all its channels; None: no limit of its own)."""
    if target.bus == "system":
        return SYSTEM_WINDOW, SYSTEM_CONNECTION_WINDOW
    return WINDOW, None


def bus_address(target: Target, address: str | None = None) -> str:
    """The bus's address: ``address=``, else the environment, else the usual socket.

    Raises:
        MechanismUnavailable: no bus to be found, with how to start one.
    """
    if address:
        return address
    if target.bus == "system":
        return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or (
            "unix:path=/var/run/dbus/system_bus_socket"
        )
    env = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={runtime}/bus"
    raise MechanismUnavailable(
        f"no D-Bus session bus for {target.describe()}: DBUS_SESSION_BUS_ADDRESS is not set "
        f"and there is no $XDG_RUNTIME_DIR/bus; {HOW_TO_START}"
    )


def address_option(endpoint: Endpoint, kw: dict[str, Any], extra: tuple[str, ...]) -> str | None:
    """``address=`` (a keyword or the URL's parameter); rejects options nobody takes.

    Raises:
        ConfigurationError: an unknown option.
    """
    address = kw.pop("address", None) or endpoint.params.get("address")
    reject_unknown(kw, endpoint, ("address", *extra))
    return _address_given(address, endpoint.url)


def _address_given(address: object, url: str) -> str | None:
    """``address=`` as given: None (not given), or a str.

    Raises:
        ConfigurationError: anything else (it was ignored for the environment's bus).
    """
    if address is None or address == "":
        return None
    if not isinstance(address, str):
        raise ConfigurationError(
            f"address={address!r} for {url} is not a D-Bus address: pass a str such as "
            f"'unix:path=/run/user/{os.getuid()}/bus' (what dbus-daemon --print-address prints)",
            endpoint=url,
        )
    return address


def checked_address(address: str, url: str) -> str:
    """``address`` (the bus's, from ``address=`` or the environment), once it parses as a
    D-Bus address that says where to connect.

    Raises:
        ConfigurationError: it does not (named, with its source and what to write).
    """
    from dbus_fast._private.address import parse_address

    try:
        entries = parse_address(address)
        why = ""
    except ValueError as exc:  # dbus-fast's InvalidAddressError
        entries, why = [], str(exc)
    for transport, opts in entries:  # alternatives: one that says where to connect will do
        if transport == "unix" and not (opts.get("path") or "abstract" in opts):
            why = why or "a unix: address needs path= or abstract="
        elif transport == "tcp" and not str(opts.get("port", "")).isdigit():
            why = why or "a tcp: address needs port=<number>"
        else:
            why = ""
            break
    if why:
        env = os.environ.get("DBUS_SESSION_BUS_ADDRESS"), os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        source = "from the environment " if address in env else ""
        raise ConfigurationError(
            f"{address!r} ({source}for {url}) is not a D-Bus address that can be connected "
            f"to ({why}): write unix:path=/run/user/{os.getuid()}/bus, unix:abstract=NAME or "
            f"tcp:host=HOST,port=PORT (what dbus-daemon --print-address prints)",
            endpoint=url,
        )
    return address


def resolve(
    endpoint: Endpoint, kw: dict[str, Any], timeout: float | None, accepted: tuple[str, ...]
) -> tuple[Target, str, float]:
    """What ``connect``/``listen`` open: the target, the bus's address, the time limit.

    Raises:
        ConfigurationError: an unknown option. InvalidURL: a bad URL.
        MechanismUnavailable: no bus, with how to start one.
    """
    address = address_option(endpoint, kw, accepted)
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    return target, checked_address(bus_address(target, address), endpoint.url), limit


def resolve_subscription(
    url: str, codec: str | None, address: str | None, timeout: float | None
) -> tuple[Target, ChannelOptions, str, float]:
    """What ``subscribe`` opens: the target, the options, the bus's address, the time limit."""
    endpoint = parse_url(url)
    options = ChannelOptions.build(endpoint, {} if codec is None else {"codec": codec})
    target = parse_target(endpoint)
    limit = timeout if timeout is not None else DEFAULT_CONNECT_TIMEOUT
    bus = bus_address(target, _address_given(address, url))
    return target, options, checked_address(bus, url), limit


def nobody_listening(url: str, target: Target) -> ConnectionRefused:
    return ConnectionRefused(
        f"nothing is listening at {url}: no connection owns {target.describe()}. "
        f"Start the listener first, or pass reconnect=SECONDS to keep trying",
        endpoint=url,
    )


def policy_denied(
    url: str, target: Target, what: str, rule: str, exc: DbusError
) -> PermissionDenied:
    """The error for a call the bus daemon's policy refused (``what`` this process may not
    do; ``rule``, the configuration rule that would allow it)."""
    where = "/etc/dbus-1/system.d/" if target.bus == "system" else "/etc/dbus-1/session.d/"
    return PermissionDenied(
        f"{url}: the {target.bus} bus's policy does not allow this process (uid {os.getuid()}) "
        f"to {what} ({exc}); allow it with {rule} in a file in {where}, or run as a user the "
        f"policy allows",
        endpoint=url,
    )


def name_refused(url: str, target: Target, exc: DbusError) -> IpcwireError:
    """The error for an error reply to ``RequestName``."""
    if exc.name == ACCESS_DENIED:
        return policy_denied(
            url, target, f"own the name {target.name}", f'<allow own="{target.name}"/>', exc
        )
    return exc


def handshake_failed(url: str, target: Target, exc: DbusError) -> IpcwireError:
    """The error for an error reply to ``Handshake``: the listener said no, the bus's policy
    did, or the name's owner is not an ipcwire listener."""
    if exc.name == ERROR_REFUSED:
        return ConnectionRefused(f"{url}: {exc}", endpoint=url)
    if exc.name == ACCESS_DENIED:
        return policy_denied(
            url,
            target,
            f"call {target.name}",
            f'<allow send_destination="{target.name}"/>',
            exc,
        )
    return RemoteProtocolError(
        f"{target.describe()} at {target.path} is not an ipcwire listener ({exc})",
        endpoint=url,
    )


def name_taken(url: str, target: Target, pid: int | None) -> AddressInUse:
    from ipcwire._procfs import describe_pid

    who = describe_pid(pid) if pid else "another connection"
    return AddressInUse(
        f"{url} is in use: {who} owns {target.describe()}; stop it, or pick another name",
        pid=pid,
        endpoint=url,
    )


def handshakes(options: ChannelOptions) -> tuple[ClientHandshake, ServerHandshake]:
    """Fresh client and server handshakes for these options (framing does not apply). Both
    offer ``goodbye``: on dbus, this side ends a failed channel with ``Fail``; ``.goodbye``
    once done says whether the peer does too (an older ipcwire does not offer it)."""
    return (
        options.client_handshake("length", goodbye=True),
        options.server_handshake("length", goodbye=True),
    )


class ClientHandshakeCalls:
    """The client's ``Handshake`` calls to ``owner``: the next one to make, and what each
    answer changes, until the channel is open (a driver makes the calls and waits).

    Raises (``answered``):
        HandshakeError, AuthenticationFailed, RemoteProtocolError: the handshake failed.
    """

    def __init__(self, options: ChannelOptions, owner: str, path: str) -> None:
        self._hs = handshakes(options)[0]
        self._url = options.url
        self._owner = owner
        self._path = path
        self.chan = ""  # the listener names the channel in its first answer
        self._text: str | None = handshake_text(self._hs.hello())

    def next_call(self) -> Message | None:
        """The next ``Handshake`` call, or None once the channel is open."""
        if self._text is None:
            return None
        return handshake_call(self._owner, self._path, self.chan, self._text)

    def answered(self, reply: Message) -> None:
        if reply.signature != "ss":  # the name's owner is not an ipcwire listener
            raise RemoteProtocolError(
                f"{self._owner} (the owner of the name at {self._url}) answered Handshake with "
                f"({reply.signature}), not (ss): it is not an ipcwire listener; check the bus "
                f"name in the URL",
                endpoint=self._url,
            )
        self.chan, answer = reply.body
        step = self._hs.receive(answer.encode())
        self._text = None if step.done else handshake_text(step.send)

    @property
    def peer_max_frame(self) -> int:
        """The listener's max_frame (once open)."""
        return self._hs.peer_max_frame

    @property
    def fails(self) -> bool:
        """Whether the listener takes ``Fail`` (once open; see the module docstring)."""
        return self._hs.goodbye


def handshake_text(framed: bytes) -> str:
    """A handshake message without its length prefix, as text (what ``Handshake`` carries)."""
    return framed[4:].decode()


def peer_from_credentials(creds: dict[str, Any], name: str) -> PeerInfo:
    """The pid and uid in a ``GetConnectionCredentials`` answer."""

    def value(key: str) -> int | None:
        v = creds.get(key)
        got = getattr(v, "value", None)
        return got if isinstance(got, int) else None

    return PeerInfo(pid=value("ProcessID"), uid=value("UnixUserID"), address=name)


def handshake_call(dest: str, path: str, channel: str, text: str) -> Message:
    return Message(
        destination=dest,
        path=path,
        interface=INTERFACE,
        member="Handshake",
        signature="ss",
        body=[channel, text],
    )


def deliver_call(dest: str, path: str, channel: str, payload: bytes) -> Message:
    return Message(
        destination=dest,
        path=path,
        interface=INTERFACE,
        member="Deliver",
        signature="say",
        body=[channel, payload],
        flags=MessageFlag.NO_AUTOSTART,
    )


def close_call(dest: str, path: str, channel: str) -> Message:
    return Message(
        destination=dest,
        path=path,
        interface=INTERFACE,
        member="Close",
        signature="s",
        body=[channel],
        flags=MessageFlag.NO_REPLY_EXPECTED | MessageFlag.NO_AUTOSTART,
    )


def fail_call(dest: str, path: str, channel: str, reason: str) -> Message:
    """``Close``'s counterpart after an error: the same flags, and a reason."""
    return Message(
        destination=dest,
        path=path,
        interface=INTERFACE,
        member="Fail",
        signature="ss",
        body=[channel, reason],
        flags=MessageFlag.NO_REPLY_EXPECTED | MessageFlag.NO_AUTOSTART,
    )


def failure_reason(exc: BaseException | None) -> str:
    """What a ``Fail`` after ``exc`` says ("" for none: a clean ``Close``): the exception's
    type only (``error_reason``), within ``MAX_REASON`` bytes."""
    reason = error_reason(exc).encode()[:MAX_REASON]
    return reason.decode("utf-8", "ignore")


def peer_failed(url: str, reason: str, *, client: bool) -> ChannelBroken:
    """What a channel raises, after every message before it, once its peer's ``Fail``
    (``reason``, as the peer sent it: bounded and made readable here) arrived; ``client``:
    this is the client's channel (else the listener's, whose peer is a client of ``url``)."""
    shown = readable_reason(reason.encode("utf-8", "replace")[:MAX_REASON])
    who = url if client else f"the client of {url}"
    return failed_error(who, shown or "no reason given", url)


def event_signal(path: str, topic: str, payload: bytes) -> Message:
    return Message.new_signal(path, INTERFACE, "Event", "say", [topic, payload])


def bus_call(member: str, signature: str = "", body: list[object] | None = None) -> Message:
    """A call to the bus daemon itself."""
    return Message(
        destination=BUS_NAME,
        path=BUS_PATH,
        interface=BUS_NAME,
        member=member,
        signature=signature,
        body=body or [],
    )


def request_name(name: str) -> Message:
    """Ask the bus for a well-known name, without queueing for it."""
    return bus_call("RequestName", "su", [name, _DO_NOT_QUEUE])


def owns_name(reply: Message) -> bool:
    """Whether ``RequestName``'s answer made (or left) this connection the owner."""
    return reply.body[0] in (_PRIMARY_OWNER, _ALREADY_OWNER)


def owner_changed_rule(name: str) -> str:
    """The match rule that tells when ``name`` (a unique name) leaves the bus."""
    return (
        f"type='signal',sender='{BUS_NAME}',path='{BUS_PATH}',interface='{BUS_NAME}',"
        f"member='NameOwnerChanged',arg0='{name}'"
    )


def peers_left_rule() -> str:
    """The match rule that tells a listener when any connection (or name) leaves the bus:
    one rule for all its peers, since a bus caps the rules of a connection (512 on the system
    bus), and a rule per peer would leave the peers beyond that unwatched."""
    return (
        f"type='signal',sender='{BUS_NAME}',path='{BUS_PATH}',interface='{BUS_NAME}',"
        f"member='NameOwnerChanged',arg2=''"
    )


MAX_MATCH_RULE: Final = 1024  # dbus-daemon refuses longer match rules (LimitsExceeded)


def check_topic(topic: object, url: str) -> str:
    """``topic`` (of ``publish`` or ``subscribe``), once it is text a D-Bus string carries.

    Raises:
        ConfigurationError: not a str, a NUL in it (dbus-fast refuses to send it), or not
            encodable as UTF-8 (a lone surrogate).
    """
    why = ""
    if not isinstance(topic, str):
        why = f"a topic is a str, not {type(topic).__name__}"
    elif "\0" in topic:
        why = "a D-Bus string cannot hold a NUL character"
    else:
        try:
            topic.encode()
        except UnicodeEncodeError as exc:
            why = f"a D-Bus string is UTF-8 ({exc.reason})"
    if why or not isinstance(topic, str):
        raise ConfigurationError(
            f"topic={topic!r} for {url}: {why}; pass text without NUL or lone surrogates",
            endpoint=url,
        )
    return topic


def event_rule(target: Target, topic: str | None, url: str) -> str:
    """The match rule of a subscription to a listener's ``Event`` signals (of ``topic``).

    Raises:
        ConfigurationError: a topic that is not text (``check_topic``), or one too long for
            a match rule.
    """
    rule = (
        f"type='signal',sender='{target.name}',path='{target.path}',interface='{INTERFACE}',"
        f"member='Event'"
    )
    if topic is None:
        return rule
    # a ' in a value is written '\'' (close the quotes, an escaped quote, open them again)
    quoted = check_topic(topic, url).replace("'", "'\\''")
    rule += f",arg0='{quoted}'"
    if len(rule.encode()) > MAX_MATCH_RULE:
        raise ConfigurationError(
            f"topic of {len(topic.encode())} bytes for {url}: too long for the bus's match "
            f"rule (at most {MAX_MATCH_RULE} bytes with the rest of the rule); subscribe "
            f"with a shorter topic, or to all topics (topic=None) and filter them",
            endpoint=url,
        )
    return rule


def is_call(msg: Message, member: str) -> bool:
    return (
        msg.message_type is MessageType.METHOD_CALL
        and msg.interface == INTERFACE
        and msg.member == member
    )


def is_event(msg: Message, path: str) -> bool:
    """Whether ``msg`` is an ``Event`` signal from the object at ``path``, broadcast: the
    subscription's match rule lets through only the broadcasts of the name's owner, but any
    connection may send a signal to this one by name (``destination``), which would be a
    forged event. One with other arguments than ``(s topic, ay payload)`` is not an ipcwire
    publisher's (the name's owner is another program): ignored too."""
    return (
        msg.message_type is MessageType.SIGNAL
        and not msg.destination
        and msg.interface == INTERFACE
        and msg.member == "Event"
        and msg.path == path
        and msg.signature == "say"  # not (topic, payload): not from an ipcwire publisher
    )


def error_text(msg: Message) -> str:
    """``Name: text`` of an error reply."""
    detail = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
    return f"{msg.error_name}: {detail}" if detail else str(msg.error_name)


def error_reply(call: Message, reply: Message, endpoint: str | None) -> DbusError:
    """The error to raise for ``reply``, an error reply to ``call``."""
    return DbusError(
        f"{call.destination} answered {call.member} with {error_text(reply)}",
        name=str(reply.error_name),
        endpoint=endpoint,
    )
