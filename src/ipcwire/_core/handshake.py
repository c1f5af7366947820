"""The connection handshake, without I/O (docs/protocol.md has the wire description).

Every handshake message is one JSON object in one frame of the channel's framing.

Length framing, always::

    client -> {"ipcwire": 1, "codec": "json", "framing": "length", "max_frame": N,
               "goodbye": 1 (a stream driver: it ends with a goodbye frame),
               "nonce": "<32 hex>" (only when the client has a token)}
    server -> {"ipcwire": 1, "max_frame": N, "goodbye": 1 (if both do)}   accepted, no token
           or {"ipcwire": 1, "max_frame": N, "nonce": "<32 hex>",
               "proof": hex(HMAC(token, "ipcwire-server" | cn | sn))}  token required
           or {"ipcwire": 1, "error": "...", "code": "version|codec|framing|protocol|..."}
    client -> {"proof": hex(HMAC(token, "ipcwire-client" | cn | sn))}  (token only)
    server -> {"ok": true}  or  {"ipcwire": 1, "error": "...", "code": "auth"}

NDJSON framing: no handshake unless the server requires a token. Then the first line is either
the client hello above (the same HMAC exchange follows, the token never crosses the wire) or,
for plain clients in any language, ``{"token": "<token>"}``, compared in constant time.

Both sides prove knowledge of the token (mutual authentication): a client configured with a
token refuses a server that does not ask for one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ipcwire._core.codecs import DECODE_ERRORS
from ipcwire._core.framing import MAX_LENGTH_PREFIX, goodbye_frame
from ipcwire.errors import (
    AuthenticationFailed,
    HandshakeError,
    IpcwireError,
    PermissionDenied,
    RemoteProtocolError,
    ResourceExhausted,
)

__all__ = [
    "HANDSHAKE_MAX_FRAME",
    "MAX_HANDSHAKING",
    "PROTOCOL_VERSION",
    "ClientHandshake",
    "ServerHandshake",
    "Step",
    "is_our_version",
    "refusal",
    "same_secret",
    "token_mismatch",
    "version_error",
]

PROTOCOL_VERSION: Final = 1
HANDSHAKE_MAX_FRAME: Final = 64 * 1024  # a peer sending more during the handshake is not ours
# Clients a listener keeps in their handshake at once (each holds a descriptor until it
# finishes or handshake_timeout passes). Past it the oldest is dropped: a local process
# opening connections it never handshakes cannot take every descriptor of the server, and
# an honest client, whose handshake takes milliseconds, is rarely the oldest.
MAX_HANDSHAKING: Final = 512

_json_encode = msgspec.json.encode
_json_decode = msgspec.json.decode


def token_mismatch(who: str) -> AuthenticationFailed:
    """A server's words for a client that refused its token proof (it said so, or hung up
    right there, as clients before this one do): the two sides have different tokens."""
    return AuthenticationFailed(
        f"{who} refused this server at the token proof: it most likely has a different "
        f"token= (the proof of this server's token did not match its own); give both sides "
        f"the same token="
    )


_REFUSAL_KEYS: frozenset[str] = frozenset(("ipcwire", "error", "code"))


def is_our_version(value: object, ours: int = PROTOCOL_VERSION) -> bool:
    """Whether a peer's ``"ipcwire"`` field is version ``ours`` (this protocol's, or the HTTP
    protocol's): an integer, so that JSON's ``true`` and ``1.0`` (equal to 1 in Python) are
    not taken for it."""
    return type(value) is int and value == ours


def refusal(obj: Any, url: str) -> IpcwireError | None:
    """The error a server's refusal line stands for, if ``obj`` (the first message of an
    NDJSON channel without a handshake) is one: with no handshake, a server that refuses
    (``allow_uids``) can only say so with one error line (docs/protocol.md section 3)."""
    if type(obj) is not dict or obj.keys() != _REFUSAL_KEYS or not is_our_version(obj["ipcwire"]):
        return None
    text = f"{url} refused the connection: {obj['error']}"
    return _refused(text, obj["code"], url)


def _refused(text: str, code: object, url: str | None) -> IpcwireError:
    """The error of a server's refusal (its error reply, or an NDJSON refusal line) with
    ``code``: "busy" is a server out of threads or places, which is worth trying again later,
    as http's 503 "busy" is (ResourceExhausted)."""
    if code == "permission":
        return PermissionDenied(text, endpoint=url)
    if code == "auth":
        return AuthenticationFailed(text, endpoint=url)
    if code == "busy":
        return ResourceExhausted(text, endpoint=url)
    return HandshakeError(text, endpoint=url)


def same_secret(given: object, expected: str | bytes) -> bool:
    """Whether ``given`` (whatever a peer sent: any JSON value, a header) is ``expected``,
    compared in constant time.

    Never raises: anything but text or bytes is simply not the secret. (``hmac.compare_digest``
    raises TypeError for text that is not ASCII, and a hostile peer chooses the text.)
    """
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogatepass")
    elif not isinstance(given, bytes):
        return False
    if isinstance(expected, str):
        expected = expected.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, expected)


def _proof(token: bytes, role: bytes, client_nonce: bytes, server_nonce: bytes) -> str:
    return hmac.new(token, role + b"\0" + client_nonce + server_nonce, hashlib.sha256).hexdigest()


def _frame(obj: dict[str, Any], framing: str) -> bytes:
    body = _json_encode(obj)
    if framing == "length":
        return len(body).to_bytes(4, "big") + body
    return body + b"\n"


def _parse(payload: memoryview | bytes, who: str, endpoint: str | None) -> dict[str, Any]:
    try:
        obj = _json_decode(payload)
    except DECODE_ERRORS:
        obj = None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(
            f"{who} at {endpoint or '?'} sent something that is not an ipcwire handshake; "
            f"is it an ipcwire endpoint with the same framing?",
            endpoint=endpoint,
        )
    return obj


def version_error(who: str, got: object, endpoint: str | None) -> HandshakeError:
    """The handshake's first message from ``who`` carried version ``got``, not ours: an older
    or newer ipcwire, or (no version at all) not an ipcwire handshake."""
    if got is None:
        return HandshakeError(
            f'{who} did not send an ipcwire handshake (its first message has no "ipcwire" '
            f"version): is it an ipcwire endpoint, with the same framing= on both sides?",
            endpoint=endpoint,
        )
    return HandshakeError(
        f"{who} speaks ipcwire protocol {got!r}, this side {PROTOCOL_VERSION}; upgrade the "
        f"older side",
        endpoint=endpoint,
    )


def _shown(value: object) -> str:
    """A peer's value as JSON, short (it chose it: bounded)."""
    text = _json_encode(value).decode("utf-8", "replace")
    return text if len(text) <= 40 else text[:37] + "..."


def _bad_member(msg: dict[str, Any], what: str) -> str | None:
    """What is wrong with the members of a hello or welcome (``what``) that are not
    compared with this side's (docs/protocol.md section 3 lists them and their values), or
    None. Members this version does not know are ignored (a later version may add some)."""
    version = msg.get("ipcwire")
    if version is not None and type(version) is not int:
        return (
            f'the {what}\'s "ipcwire" must be the protocol version, an integer '
            f"({PROTOCOL_VERSION}); got {_shown(version)}"
        )
    if what == "hello" and not isinstance(msg.get("codec"), str):
        got = _shown(msg["codec"]) if "codec" in msg else "nothing"
        return (
            f'the hello\'s "codec" must be the codec\'s name, a string ("json", "msgpack", '
            f'"bytes" or "pickle"); got {got}'
        )
    if "max_frame" in msg:
        value = msg["max_frame"]
        if type(value) is not int or not 1 <= value <= MAX_LENGTH_PREFIX:
            return (
                f'the {what}\'s "max_frame" must be an integer from 1 to {MAX_LENGTH_PREFIX} '
                f"(the largest message that side takes, in bytes), or left out; got "
                f"{_shown(value)}"
            )
    if "goodbye" in msg and not (type(msg["goodbye"]) is int and msg["goodbye"] in (0, 1)):
        return (
            f'the {what}\'s "goodbye" must be 1 (this side ends with a goodbye frame) or 0, '
            f"or left out; got {_shown(msg['goodbye'])}"
        )
    if "nonce" in msg and not _is_hex(msg["nonce"]):
        return (
            f'the {what}\'s "nonce" must be 16 random bytes as 32 hex digits, or left out; '
            f"got {_shown(msg['nonce'])}"
        )
    return None


def _is_hex(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Step:
    """What one received handshake message leads to.

    ``send``: bytes to write now (possibly empty). ``done``: the handshake succeeded.
    ``error``: it failed; write ``send`` (which tells the peer why), then close.
    """

    send: bytes = b""
    done: bool = False
    error: IpcwireError | None = None


class ClientHandshake:
    """The connecting side. Write :meth:`hello`, then feed each received frame to
    :meth:`receive` until it returns a step with ``done``; errors are raised."""

    def __init__(
        self,
        *,
        codec: str,
        framing: str,
        max_frame: int,
        token: bytes | None,
        endpoint: str | None = None,
        goodbye: bool = False,
    ) -> None:
        self.codec = codec
        self.framing = framing
        self.max_frame = max_frame
        self.token = token
        self.endpoint = endpoint
        self.peer_max_frame = max_frame
        # ``goodbye``: this side ends the channel with a goodbye frame (length framing) and
        # offers it; ``self.goodbye`` is whether both sides agreed (docs/protocol.md section 5)
        self._offer_goodbye = goodbye and framing == "length"
        self.goodbye = False
        self._nonce = secrets.token_bytes(16)
        self._server_nonce = b""
        self._state = "hello"
        # What to send the server before closing when :meth:`receive` raised, so that its
        # log says why this client left (never the token or a proof): b"" for nothing.
        self.farewell = b""

    @property
    def needed(self) -> bool:
        """Whether a handshake happens at all (NDJSON without a token has none)."""
        return self.framing == "length" or self.token is not None

    def hello(self) -> bytes:
        """The first frame to send."""
        msg: dict[str, Any] = {
            "ipcwire": PROTOCOL_VERSION,
            "codec": self.codec,
            "framing": self.framing,
            "max_frame": self.max_frame,
        }
        if self._offer_goodbye:
            msg["goodbye"] = 1
        if self.token is not None:
            msg["nonce"] = self._nonce.hex()
        self._state = "welcome"
        return _frame(msg, self.framing)

    def receive(self, payload: memoryview | bytes) -> Step:
        """Handle one frame from the server.

        Raises:
            AuthenticationFailed: the token is wrong or missing on one side.
            HandshakeError: version, codec or framing disagree.
            PermissionDenied: the server's allow-list refused this process.
            RemoteProtocolError: the server sent something that is not a handshake.
        """
        msg = _parse(payload, "the server", self.endpoint)
        if "error" in msg:
            raise self._server_error(msg)
        if self._state == "welcome":
            return self._on_welcome(msg)
        if self._state == "result" and msg.get("ok") is True:
            self._state = "done"
            return Step(done=True)
        raise RemoteProtocolError(
            f"unexpected handshake message from {self.endpoint}: {msg!r}", endpoint=self.endpoint
        )

    def _on_welcome(self, msg: dict[str, Any]) -> Step:
        bad = _bad_member(msg, "welcome")
        if bad is not None:
            raise RemoteProtocolError(
                f"{self.endpoint} answered the hello with a welcome this client cannot use: "
                f"{bad}; is it an ipcwire endpoint (docs/protocol.md section 3)?",
                endpoint=self.endpoint,
            )
        if not is_our_version(msg.get("ipcwire")):
            raise version_error(str(self.endpoint), msg.get("ipcwire"), self.endpoint)
        if "max_frame" in msg:
            self.peer_max_frame = msg["max_frame"]
        self.goodbye = self._offer_goodbye and msg.get("goodbye") == 1
        server_nonce = msg.get("nonce")
        if self.token is None:
            if server_nonce is not None:
                raise AuthenticationFailed(
                    f"{self.endpoint} requires a token; pass token=... (the same on both sides)",
                    endpoint=self.endpoint,
                )
            self._state = "done"
            return Step(done=True)
        if not isinstance(server_nonce, str) or not isinstance(msg.get("proof"), str):
            if self.goodbye:  # the server took the handshake as done: end the channel
                self.farewell = goodbye_frame(
                    "AuthenticationFailed: the client has a token= and this server asks for "
                    "none, so the client refused it; give the server the same token=, or "
                    "drop the client's"
                )
            raise AuthenticationFailed(
                f"{self.endpoint} does not ask for a token, so it cannot prove it knows yours; "
                f"refusing to talk to it. Give the server the same token=, or drop it here",
                endpoint=self.endpoint,
            )
        self._server_nonce = bytes.fromhex(server_nonce)  # (checked: hex)
        want = _proof(self.token, b"ipcwire-server", self._nonce, self._server_nonce)
        if not same_secret(msg["proof"], want):
            # (a server before this one takes the message for a missing proof: "wrong token")
            refused = {"ipcwire": PROTOCOL_VERSION, "error": "token proof", "code": "auth"}
            self.farewell = _frame(refused, self.framing)
            raise AuthenticationFailed(
                f"{self.endpoint} does not know this token (its proof did not match); "
                f"check that both sides use the same token",
                endpoint=self.endpoint,
            )
        self._state = "result"
        mine = _proof(self.token, b"ipcwire-client", self._nonce, self._server_nonce)
        return Step(send=_frame({"proof": mine}, self.framing))

    def _server_error(self, msg: dict[str, Any]) -> IpcwireError:
        text = f"{self.endpoint} refused the connection: {msg.get('error')}"
        return _refused(text, msg.get("code"), self.endpoint)


class ServerHandshake:
    """The accepting side. Feed each received frame to :meth:`receive`; write ``step.send``;
    stop at ``done`` (success) or ``error`` (write, log, close)."""

    def __init__(
        self,
        *,
        codec: str,
        framing: str,
        max_frame: int,
        token: bytes | None,
        endpoint: str | None = None,
        goodbye: bool = False,
    ) -> None:
        self.codec = codec
        self.framing = framing
        self.max_frame = max_frame
        self.token = token
        self.endpoint = endpoint
        self.peer_max_frame = max_frame
        self._offer_goodbye = goodbye and framing == "length"
        self.goodbye = False  # both sides end with a goodbye frame (the client offered it)
        self._nonce = secrets.token_bytes(16)
        self._client_nonce = b""
        self._state = "hello"

    @property
    def needed(self) -> bool:
        """Whether to wait for a handshake (NDJSON without a token has none)."""
        return self.framing == "length" or self.token is not None

    @property
    def awaiting_proof(self) -> bool:
        """Whether the client has this server's token proof and has not answered yet (a
        client that hangs up now refused it: see :func:`token_mismatch`)."""
        return self._state == "proof"

    def _fail(self, error: IpcwireError, code: str) -> Step:
        self._state = "failed"
        reply = {"ipcwire": PROTOCOL_VERSION, "error": str(error), "code": code}
        return Step(send=_frame(reply, self.framing), error=error)

    def reject(self, error: IpcwireError, code: str) -> Step:
        """Refuse before any message arrived (for example an allow-list check)."""
        return self._fail(error, code)

    def misframed(self, header: bytes) -> Step | None:
        """The refusal for a client whose first bytes, ``header`` (the "length prefix" a
        length-framing server read, over its handshake limit), are a line of JSON: a client
        with ``framing="ndjson"`` (ipcwire's, with or without a token, or any other). The
        reply is an NDJSON refusal line, which both read as a HandshakeError (docs/protocol.md
        section 3). None: not JSON text, nothing to say."""
        if self.framing != "length" or self._state != "hello" or header[:1] not in (b"{", b"["):
            return None
        self._state = "failed"
        error = HandshakeError(
            "the framings differ: the client writes lines of JSON (framing='ndjson'), the "
            "server uses framing='length'; use the same framing on both sides"
        )
        reply = {"ipcwire": PROTOCOL_VERSION, "error": str(error), "code": "framing"}
        return Step(send=_frame(reply, "ndjson"), error=error)

    def receive(self, payload: memoryview | bytes) -> Step:
        """Handle one frame from the client; never raises for what the client sent."""
        try:
            msg = _parse(payload, "the client", self.endpoint)
        except RemoteProtocolError as exc:
            return self._fail(exc, "protocol")
        if self._state == "hello":
            if "ipcwire" not in msg and self.framing == "ndjson":
                return self._plain_token(msg)
            return self._on_hello(msg)
        if self._state == "proof":
            return self._on_proof(msg)
        return self._fail(RemoteProtocolError("unexpected handshake message"), "protocol")

    def _plain_token(self, msg: dict[str, Any]) -> Step:
        token = msg.get("token")
        if self.token is not None and isinstance(token, str):
            if same_secret(token, self.token):
                self._state = "done"
                return Step(done=True)
            return self._fail(AuthenticationFailed("wrong token"), "auth")
        return self._fail(
            AuthenticationFailed(
                'this endpoint requires a token: send {"token": "..."} as the first line'
            ),
            "auth",
        )

    def _on_hello(self, msg: dict[str, Any]) -> Step:
        if "ipcwire" not in msg:
            who = "the client" if self.endpoint is None else f"the client of {self.endpoint}"
            return self._fail(version_error(who, None, self.endpoint), "version")
        bad = _bad_member(msg, "hello")
        if bad is not None:
            return self._fail(RemoteProtocolError(bad, endpoint=self.endpoint), "protocol")
        if not is_our_version(msg.get("ipcwire")):
            who = "the client" if self.endpoint is None else f"the client of {self.endpoint}"
            return self._fail(version_error(who, msg.get("ipcwire"), self.endpoint), "version")
        if msg.get("codec") != self.codec:
            return self._fail(
                HandshakeError(
                    f"the codecs differ: the client uses codec={msg.get('codec')!r}, the server "
                    f"codec={self.codec!r}; use the same codec on both sides"
                ),
                "codec",
            )
        if msg.get("framing", self.framing) != self.framing:
            return self._fail(
                HandshakeError(
                    f"the framings differ: the client uses "
                    f"framing={msg.get('framing')!r}, the server framing={self.framing!r}; use "
                    f"the same framing on both sides"
                ),
                "framing",
            )
        if "max_frame" in msg:
            self.peer_max_frame = msg["max_frame"]
        welcome: dict[str, Any] = {"ipcwire": PROTOCOL_VERSION, "max_frame": self.max_frame}
        if self._offer_goodbye and msg.get("goodbye") == 1:
            welcome["goodbye"] = 1
            self.goodbye = True
        if self.token is None:
            self._state = "done"
            return Step(send=_frame(welcome, self.framing), done=True)
        nonce = msg.get("nonce")
        if not isinstance(nonce, str):
            return self._fail(
                AuthenticationFailed("this server requires a token; pass token=... to connect"),
                "auth",
            )
        self._client_nonce = bytes.fromhex(nonce)  # (checked: hex)
        welcome["nonce"] = self._nonce.hex()
        welcome["proof"] = _proof(self.token, b"ipcwire-server", self._client_nonce, self._nonce)
        self._state = "proof"
        return Step(send=_frame(welcome, self.framing))

    def _on_proof(self, msg: dict[str, Any]) -> Step:
        assert self.token is not None
        if "error" in msg and msg.get("code") == "auth":  # (its text is not logged)
            return self._fail(token_mismatch("the client"), "auth")
        want = _proof(self.token, b"ipcwire-client", self._client_nonce, self._nonce)
        if not same_secret(msg.get("proof"), want):
            return self._fail(AuthenticationFailed("wrong token"), "auth")
        self._state = "done"
        return Step(send=_frame({"ok": True}, self.framing), done=True)
