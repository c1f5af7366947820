"""The picks of ``ipcwire choose``'s rules against the registry: whether each can be used here
for what was asked (:func:`consider`), the example URL it is given, and what the user must add
for the situation asked about (caveats: TLS and a token across machines, permissions for
several users). The engine (``engine.py``) orders what survives.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from dataclasses import dataclass

from ipcwire.advisor.questions import Answers, this_os
from ipcwire.advisor.rules import REQUIREMENTS, Pick, holds
from ipcwire.errors import InvalidURL
from ipcwire.registry import MechanismSpec, lookup

__all__ = [
    "Considered",
    "because_text",
    "caveats_for",
    "consider",
    "no_driver",
    "runtime_dir",
    "wait_option",
]


@dataclass(slots=True)
class Considered:
    """One pick of an applying rule: its URL and title, or why it was skipped."""

    pick: Pick
    title: str
    url: str
    skipped: str | None = None
    no_driver: str | None = None  # ipcwire has no driver for it on any platform (xpc): why


def wait_option(spec: MechanismSpec) -> str:
    """The option that selects a wait policy: ``policy``, unless the mechanism's package
    names another in ``BENCH_WAIT_OPTION`` (the convention ``ipcwire bench`` follows too)."""
    try:
        module = importlib.import_module(spec.blocking.rpartition(".")[0])
    except ImportError:
        return "policy"
    return str(getattr(module, "BENCH_WAIT_OPTION", "policy"))


# The example URLs of the registry and the rules put files in the runtime directory of a
# typical first user; a recommendation for this machine puts them in this user's.
_EXAMPLE_DIR = "/run/user/1000/"


def runtime_dir() -> str:
    """Where this user's socket files go: ``$XDG_RUNTIME_DIR`` when it is a directory this
    user can write, else the temporary directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return runtime.rstrip("/") or "/"
    return tempfile.gettempdir()


# For several users: a directory they share (group-owned, writable by the server's user only;
# systemd's RuntimeDirectory=), not one user's runtime directory (0700) nor /tmp (squatting).
_SHARED_DIR = "/run/app/"


def _url(pick: Pick, spec: MechanismSpec, answers: Answers) -> str:
    url = pick.url or spec.example_url or f"{pick.scheme}:"
    if answers.users == "several" and url.partition(":")[0] in _PERMISSIONS:
        if _EXAMPLE_DIR in url:
            url = url.replace(_EXAMPLE_DIR, _SHARED_DIR)
        elif spec.scheme == "shm":  # shm://NAME's socket is in a 0700 directory of its user's
            url = f"shm://{_SHARED_DIR}app.sock"
    elif answers.os == this_os() and _EXAMPLE_DIR in url:
        url = url.replace(_EXAMPLE_DIR, runtime_dir().rstrip("/") + "/")
    if pick.wait:
        url += ("&" if "?" in url else "?") + f"{wait_option(spec)}={pick.wait}"
    return url


def no_driver(spec: MechanismSpec) -> str | None:
    """Why ipcwire cannot drive this mechanism on any platform (its package's ``NO_DRIVER``:
    xpc), or None."""
    package = sys.modules.get(spec.blocking.rpartition(".")[0])  # imported to register it
    reason = getattr(package, "NO_DRIVER", None)
    return reason if isinstance(reason, str) else None


def consider(pick: Pick, answers: Answers) -> Considered:
    """Check one pick against the registry, the target OS, this machine and the answers."""
    values = answers.as_dict()
    specs: list[MechanismSpec] = []
    for scheme in (pick.scheme, *pick.also):
        try:
            spec = lookup(scheme)
        except InvalidURL:
            return Considered(
                pick, scheme, f"{scheme}:", f"{scheme}: is not registered (yet) in this ipcwire"
            )
        nowhere = no_driver(spec)
        if nowhere is not None:
            return Considered(
                pick, spec.title, _url(pick, spec, answers), f"{spec.title}: {nowhere}", nowhere
            )
        caps = spec.capabilities
        if not any(answers.os.startswith(p) for p in caps.platforms):
            return Considered(
                pick,
                spec.title,
                _url(pick, spec, answers),
                f"{spec.title} does not run on {answers.os} (only {', '.join(caps.platforms)})",
            )
        if answers.os == this_os():
            reason = spec.unavailable_here()
            if reason is not None:
                return Considered(
                    pick, spec.title, _url(pick, spec, answers), f"not available: {reason}"
                )
        specs.append(spec)
    main = specs[0]
    title = " + ".join(s.title for s in specs)
    if pick.per_direction:
        title += " (two: one per direction)"
    url = " + ".join(_url(pick if s is main else Pick(s.scheme), s, answers) for s in specs)
    if pick.wait is not None and pick.wait not in main.capabilities.wait_policies:
        policies = ", ".join(main.capabilities.wait_policies) or "none"
        return Considered(
            pick, title, url, f"{main.title} has no wait policy {pick.wait!r} (it has: {policies})"
        )
    for req in REQUIREMENTS:
        if holds(req.when, values) is not None:
            continue
        if req.capability == "sleeps_when_idle":
            if pick.spins:
                return Considered(pick, title, url, f"{pick.label} spins while it waits, "
                                  f"but {req.why}")  # fmt: skip
        elif req.capability == "bidirectional" and pick.per_direction:
            continue  # two one-way channels, one each way
        elif req.capability == "tells_failure" and _spawn_tells(pick, answers):
            continue  # the parent watching its children is the side that asks
        elif req.capability == "multi_client" and _spawns_each(pick, answers):
            continue  # the parent spawns each agent: a pair of pipes per agent
        elif req.capability == "crosses_machines" and not any(
            _crosses(s, t) for s, t in zip(specs, _transports(pick), strict=True)
        ):
            if any(s.capabilities.crosses_machines for s in specs):  # grpc+unix, http+unix
                return Considered(
                    pick, title, url, f"{url} is a socket file, on this machine only, but {req.why}"
                )
            return Considered(
                pick,
                title,
                url,
                f"{title}: {req.capability} is false in its registered capabilities, but {req.why}",
            )
        elif not any(getattr(s.capabilities, req.capability) for s in specs):
            return Considered(
                pick,
                title,
                url,
                f"{title}: {req.capability} is false in its registered capabilities, but {req.why}",
            )
    return Considered(pick, title, url)


# How each network mechanism is secured, for answers that cross machines: its TLS URL and the
# options that go with it (from its page in docs/mechanisms).
_TLS = {
    "http": "https://HOST:PORT/... with ssl= (an ssl.SSLContext) and token= on both sides",
    "ws": "wss://HOST:PORT/... with ssl= (an ssl.SSLContext) and token= on both sides",
    "sse+http": "sse+https://HOST:PORT/... with ssl= (an ssl.SSLContext) and token=",
    "grpc": "grpcs://HOST:PORT with certfile=/keyfile= (the listener), the CA on the client, "
    "and token= on both sides",
    "tcp": "tcp://HOST:PORT with ssl= (an ssl.SSLContext) and token= on both sides",
}


def _crosses(spec: MechanismSpec, transport: str) -> bool:
    """Whether a part reaches other machines: the registry says so of the mechanism, and its
    URL is not the Unix-socket form of it (``grpc+unix``, ``http+unix``)."""
    return spec.capabilities.crosses_machines and not transport.endswith("+unix")


def _spawn_tells(pick: Pick, answers: Answers) -> bool:
    """Whether the pick is spawn()'s pipes to a child the parent watches: the parent tells a
    failed child from one that finished (ChannelBroken with its exit status, docs/mechanisms/
    spawn.md), though the registry's pipe, judged from both ends, does not."""
    parent = answers.agents in ("spawned", "web-ui") or answers.relation == "parent-child"
    return pick.scheme == "pipe" and parent


def _transports(pick: Pick) -> list[str]:
    """The URL scheme of each part of the pick, which says where it can reach and who may
    connect: ``grpc+unix`` for ``Pick("grpc", url="grpc+unix://...")`` (a socket file, this
    machine only), ``grpc`` for the registry's ``grpc://127.0.0.1:...`` (a port)."""
    main = pick.url.partition(":")[0] if pick.url else pick.scheme
    return [main, *pick.also]


_SQUAT = (
    "Any user can take a name in a world-writable directory such as /tmp first (squatting): "
    "it is no security boundary; put the socket in a directory only the server's user can "
    "write"
)

# Who may use a mechanism whose files are 0600 (docs/mechanisms/<scheme>.md): how to let
# another user in, and how to know who the server is. Keyed by the URL's scheme: the socket
# file of grpc+unix, http+unix and ws+unix is made as unix:'s is, but what each checks of its
# peers differs (allow_uids= on which side, peer credentials or none).
_PERMISSIONS = {
    "unix": "the socket is created 0600, so processes of other users are refused "
    "(PermissionDenied); to let them in, listen with mode=0o660 and a group the users share, "
    "and allow_uids=[their uids]; connect with allow_uids=[the server's uid] to check who "
    "listens before anything is sent. Any user can take a name in a world-writable directory "
    "such as /tmp first (squatting): it is no security boundary; put the socket in a directory "
    'only the server\'s user can write (docs/mechanisms/unix.md, "Who is the server?")',
    "shm": "its socket is created 0600 (shm://NAME's in a 0700 directory of your own), so "
    "processes of other users are refused; to let them in, listen on shm:///dir/app.sock in a "
    "directory they share, with mode=0o660 and a group the users share, and allow_uids=[their "
    "uids]; a name in a world-writable directory such as /tmp can be taken first by any user "
    '(squatting) (docs/mechanisms/shm.md; docs/mechanisms/unix.md, "Who is the server?")',
    "fifo": "the FIFO is created 0600, so processes of other users are refused; to let them "
    "in, listen with mode=0o660 and a group the users share (a FIFO has no allow_uids=: its "
    "mode and directory decide who may write it); an existing FIFO that is not yours is "
    "refused, so put it in a directory only the listener's user can write, not /tmp "
    '(docs/mechanisms/fifo.md; docs/mechanisms/unix.md, "Who is the server?")',
    "grpc+unix": "the socket is created 0600 (mode=), so processes of other users are refused "
    "(PermissionDenied); to let them in, listen with mode=0o660 and a group the users share. "
    "gRPC has no allow_uids= on either side and no peer credentials (ch.peer has no uid): the "
    "socket's mode and group decide who connects; to know who the server is (and who the "
    "client is), give both sides token=: a client with a token refuses a server that cannot "
    f"prove it knows it (AuthenticationFailed). {_SQUAT} (docs/mechanisms/grpc.md, "
    '"Binding safely"; docs/mechanisms/unix.md, "Who is the server?")',
    "http+unix": "the socket is created 0600, so processes of other users are refused "
    "(PermissionDenied); to let them in, listen with mode=0o660 and a group the users share, "
    "and allow_uids=[their uids] (others get 403, PermissionDenied; the server's ch.peer has "
    "the client's uid). The client has no allow_uids= and no peer credentials: to know who "
    "the server is, give both sides token=: a client with a token refuses a server that "
    f"cannot prove it knows it (AuthenticationFailed). {_SQUAT} (docs/mechanisms/rest.md; "
    'docs/mechanisms/unix.md, "Who is the server?")',
    "ws+unix": "the socket is created 0600, so processes of other users are refused "
    "(PermissionDenied); to let them in, listen with mode=0o660 and a group the users share, "
    "and allow_uids=[their uids] (others get 403, PermissionDenied). connect() has no "
    "allow_uids=: check ch.peer.uid (the server's, from the kernel) before sending anything, "
    f"or give both sides token=. {_SQUAT} (docs/mechanisms/websocket.md, "
    '"On a Unix socket"; docs/mechanisms/unix.md, "Who is the server?")',
}


def _permissions(pick: Pick) -> list[str]:
    """Who may connect to each part of the pick whose files are 0600, and how to share it."""
    return [_PERMISSIONS[name] for name in _transports(pick) if name in _PERMISSIONS]


def because_text(because: str, pick: Pick, answers: Answers) -> str:
    """The reason shown for a candidate; for several users it says how they share it."""
    shared = _permissions(pick) if answers.users == "several" else []
    if not shared:
        return because
    return (
        f"{because}; several users: {'; '.join(shared)}; the URL is in {_SHARED_DIR} "
        "(a directory the users share, writable only by the server's user: systemd's "
        "RuntimeDirectory=, or created by root)"
    )


def _spawns_each(pick: Pick, answers: Answers) -> bool:
    """Whether the pick is spawn()'s pipes to agents the parent spawns, each with pipes of its
    own: several receivers without one listener serving them (the registry's multi_client)."""
    return pick.scheme == "pipe" and answers.agents in ("spawned", "web-ui")


def caveats_for(pick: Pick, answers: Answers) -> list[str]:
    """What the user must know or add for the answers given."""
    out = _security(pick, answers)
    if answers.users != "several":  # for several users it is part of the why
        out += [f"one user only: {text}" for text in _permissions(pick)]
    else:
        out += [f"several users: {text}" for text in _other_users(pick, answers)]
    if answers.tells_failure and _spawn_tells(pick, answers):
        out.append(
            "the parent tells a failed child from one that finished (recv raises ChannelBroken "
            "with its exit code or signal; EndOfChannel for exit 0), but the child sees a "
            "killed parent as end of input: stdio(exit_on_parent_death=True) ends it then "
            "(docs/mechanisms/spawn.md)"
        )
    return out


# What keeps other users out of a mechanism that has no socket file of its own, for
# --users several (docs/mechanisms/<scheme>.md).
_OTHER_USERS = {
    "spool": "the spool's directories are created 0700 (mode=), so other users' processes "
    "are refused (PermissionDenied); to share it, give both sides mode=0o770, with the "
    "directory's group one the users share. Anyone who may write the directory can add a "
    "message, and nothing tells one writer from another (no token=, no peer credentials): "
    'use codec="json" or "msgpack" (docs/mechanisms/spool.md, "Who may add messages")',
    "dbus": "a session bus is one user's: its daemon lets in only the processes of the user "
    "it runs as (it checks the uid), so other users' processes cannot reach it. For several "
    "users use the system "
    "bus, dbus://system/<bus.name>, with a policy file (root installs it in "
    "/etc/dbus-1/system.d/) whose <allow own=.../> and <allow send_destination=.../> rules "
    "let the service and its callers in (otherwise PermissionDenied names the rule); ch.peer.uid "
    "comes from the bus daemon (docs/mechanisms/dbus.md)",
}


def _other_users(pick: Pick, answers: Answers) -> list[str]:
    """For several users on this machine: who else can reach each part of the pick that has
    no socket file of its own (a port on 127.0.0.1, a spool's directory, a bus)."""
    out = []
    for name, transport in zip((pick.scheme, *pick.also), _transports(pick), strict=True):
        spec = lookup(name)
        docs = f" ({spec.docs})" if spec.docs else ""
        if name in _OTHER_USERS:
            out.append(_OTHER_USERS[name])
        elif not _crosses(spec, transport) or answers.distance != "same-machine":
            continue  # a socket file (the why says who may use it); across machines: _security
        elif name in _TLS:
            out.append(
                f"any process of any user on this machine can connect to a port on 127.0.0.1: "
                f"a port has no file mode and no peer credentials (no allow_uids=, ch.peer has "
                f"no uid), so give the listener token= (and ipcwire clients too: a client with "
                f"a token refuses a server that cannot prove it knows it, such as one on a port "
                f"another user took first); with TLS too when it crosses machines: "
                f"{_TLS[name]}{docs}"
            )
        else:
            out.append(
                f"any process of any user on this machine can send to a port on 127.0.0.1, "
                f"and {spec.title} has no token and no peer credentials: for anything that "
                f"matters use a Unix socket (mode=0o660, allow_uids=) or tcp:// with "
                f"token={docs}"
            )
    return out


def _security(pick: Pick, answers: Answers) -> list[str]:
    """What an answer that crosses machines needs besides its example URL (which binds
    127.0.0.1, reachable from this machine only)."""
    if answers.distance != "may-move":
        return []
    out = []
    for name, transport in zip((pick.scheme, *pick.also), _transports(pick), strict=True):
        spec = lookup(name)
        if not _crosses(spec, transport):
            continue
        docs = f" ({spec.docs})" if spec.docs else ""
        if spec.scheme in _TLS:
            out.append(
                f"across machines: listen on an address the others can reach (not 127.0.0.1), "
                f"with TLS and a token: {_TLS[spec.scheme]}; without them anyone on the "
                f"network can connect and read{docs}"
            )
        else:
            out.append(
                f"across machines: {spec.title} has no TLS and no token: anyone who can reach "
                f"its port can send to it; for anything that matters use tcp:// with ssl= and "
                f"token={docs}"
            )
    return out
