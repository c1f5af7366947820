"""The OpenAPI 3.1 description an ipcwire HTTP listener serves at ``{prefix}/openapi.json``."""

from __future__ import annotations

from typing import Any

import msgspec

from ipcwire._core.framing import MAX_LENGTH_PREFIX
from ipcwire.http._protocol import (
    BATCH_TYPE,
    FAILED_HEADER,
    MAX_REASON,
    PROBLEM_TYPE,
    REPLY_HEADER,
    TIMEOUT_HEADER,
    UNDELIVERED_HEADER,
)

__all__ = ["openapi_document"]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def openapi_document(
    *, title: str, prefix: str, media_type: str, max_frame: int, token: bool
) -> bytes:
    """The document, as JSON bytes."""
    message = {
        "required": True,
        "description": f"one message, encoded as {media_type} (at most {max_frame} bytes)",
        "content": {media_type: {"schema": {}}},
    }
    reply = {"description": "the reply", "content": {media_type: {"schema": {}}}}
    # What the server's front door answers on every operation, before the operation runs.
    refused = {
        "401": _problem("missing or wrong bearer token"),
        "403": _problem(
            "code 'origin': a browser page of an origin the listener does not allow "
            "(listen's origins=); code 'forbidden' (http+unix): a uid not in allow_uids"
        ),
    }
    no_channel = {
        "404": _problem(
            "code 'no_channel': no such channel (closed, expired, ended for a newer client, "
            "or the server restarted): open a new one"
        )
    }
    errors = {
        "400": _problem("the body does not decode with the server's codec"),
        **refused,
        "408": _problem("the body stalled (nothing came for the server's handshake_timeout)"),
        "413": _problem(f"the body is over {max_frame} bytes"),
        "415": _problem(f"the Content-Type is not {media_type}"),
    }
    channel_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    timeout = {
        "name": TIMEOUT_HEADER,
        "in": "header",
        "required": False,
        "description": "seconds the client waits for the reply (the server answers 504 after)",
        "schema": {"type": "number"},
    }
    reply_wait = {
        "name": REPLY_HEADER,
        "in": "header",
        "required": False,
        "description": "answer with the channel's next message if it comes within this many "
        "seconds (at most 20; only while no message stream is open), else 204; the messages "
        f"are then delivered at once or not at all (504) unless {TIMEOUT_HEADER} is given",
        "schema": {"type": "number"},
    }
    undelivered = {
        "name": UNDELIVERED_HEADER,
        "in": "header",
        "required": False,
        "description": "how many messages the client could not post before closing: the "
        "server channel then ends as broken, not cleanly",
        "schema": {"type": "integer", "minimum": 0},
    }
    failed = {
        "name": FAILED_HEADER,
        "in": "header",
        "required": False,
        "description": "the client's channel ended after an error on its side (a with block "
        "or handler left by an exception): '<Type> raised while the channel was open', "
        f"percent-encoded UTF-8, at most {MAX_REASON} bytes; the server channel then ends as "
        "broken, naming it. Send it only if the open answer said tells_failure",
        "schema": {"type": "string"},
    }
    failed_500 = _problem(
        "code 'failed': the server application ended the channel after an error on its side "
        "(the reason member says which exception type); all was fetched"
    )
    batch = {"description": "messages, each a 4-byte big-endian length then its bytes"}
    paths: dict[str, Any] = {
        prefix or "/": {
            "post": {
                "summary": "One request, one reply",
                "description": "The server application receives the body as one message on a "
                "new channel and answers it. 204 if it sent no reply.",
                "parameters": [timeout],
                "requestBody": message,
                "responses": {
                    "200": reply,
                    "204": {"description": "handled, no reply"},
                    "500": _problem("the server application failed before replying"),
                    "503": _problem("the server is shutting down (not handled, or not fully)"),
                    "504": _problem("no reply in time"),
                    **errors,
                },
            }
        },
        f"{prefix}/channels": {
            "post": {
                "summary": "Open a channel",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Open"}}
                    },
                },
                "responses": {
                    "201": {
                        "description": "the channel",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Opened"}}
                        },
                    },
                    "409": _problem("the codec or protocol version differ"),
                    "503": _problem(
                        "code 'busy': max_channels= channels are open, or max_sessions= "
                        "and each is handling a request"
                    ),
                    **errors,
                },
            }
        },
        f"{prefix}/channels/{{id}}": {
            "post": {
                "summary": "Send one message and receive the channel's next message",
                "parameters": [channel_id, timeout],
                "requestBody": message,
                "responses": {
                    "200": reply,
                    "410": _problem("the server closed the channel"),
                    "500": failed_500,
                    "504": _problem("no message in time"),
                    **no_channel,
                    **errors,
                },
            },
            "delete": {
                "summary": "Close the channel",
                "parameters": [channel_id, undelivered, failed],
                "responses": {
                    "204": {"description": "closed (also when there was no such channel)"},
                    **refused,
                },
            },
        },
        f"{prefix}/channels/{{id}}/stream": {
            "get": {
                "summary": "Every message for the client, as it comes, on one long response",
                "description": "Frames as in a batch; a length of 0xFFFFFFFF is a heartbeat "
                "(every 15 s when idle). Ends when the server closes the channel. If it closed "
                "after an error on its side, the stream ends with a length of 0xFFFFFFFE, a "
                f"4-byte reason length (at most {MAX_REASON}) and the reason, for a client "
                "whose open request said tells_failure; for any other it is cut short "
                "(no end of the chunked body).",
                "parameters": [channel_id],
                "responses": {
                    "200": {
                        "description": "the stream",
                        "content": {BATCH_TYPE: {"schema": batch}},
                    },
                    "409": _problem("the channel already has a stream"),
                    **no_channel,
                    **refused,
                },
            }
        },
        f"{prefix}/channels/{{id}}/messages": {
            "post": {
                "summary": "Send messages (one, or a batch)",
                "parameters": [channel_id, timeout, reply_wait],
                "requestBody": {
                    "required": True,
                    "content": {media_type: {"schema": {}}, BATCH_TYPE: {"schema": batch}},
                },
                "responses": {
                    "200": {
                        "description": f"with {REPLY_HEADER}: the channel's next message "
                        "(several as a batch)",
                        "content": {media_type: {"schema": {}}, BATCH_TYPE: {"schema": batch}},
                    },
                    "204": {"description": "queued for the server application"},
                    "504": _problem("no room in the server application's queue in time"),
                    "410": _problem("the server closed the channel"),
                    "500": failed_500,
                    **no_channel,
                    **errors,
                },
            },
            "get": {
                "summary": "Long-poll for the next messages",
                "parameters": [
                    channel_id,
                    {
                        "name": "wait",
                        "in": "query",
                        "description": "seconds to wait for a message (at most 20; default 0)",
                        "schema": {"type": "number", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {"description": "a batch", "content": {BATCH_TYPE: {"schema": batch}}},
                    "204": {"description": "nothing within the wait"},
                    "400": _problem("wait= is not a number of seconds"),
                    "410": _problem("the server closed the channel and all was fetched"),
                    "500": failed_500,
                    **no_channel,
                    **refused,
                },
            },
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": "An ipcwire HTTP endpoint"},
        "paths": paths,
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"},
                        "reason": {"type": "string", "description": "code 'failed': why"},
                    },
                },
                "Open": {
                    "type": "object",
                    "required": ["ipcwire", "codec"],
                    "properties": {
                        "ipcwire": {"const": 1},
                        "codec": {"type": "string"},
                        "max_frame": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LENGTH_PREFIX,
                            "description": "the largest message the client takes (400 if bad)",
                        },
                        "nonce": {
                            "type": "string",
                            "pattern": "^([0-9a-fA-F]{2})+$",
                            "description": "hex (16 random bytes); asks for a proof",
                        },
                        "tells_failure": {
                            "type": "boolean",
                            "description": "the client reads the stream's failure mark",
                        },
                    },
                },
                "Opened": {
                    "type": "object",
                    "properties": {
                        "ipcwire": {"const": 1},
                        "channel": {"type": "string"},
                        "max_frame": {"type": "integer"},
                        "max_batch": {"type": "integer"},
                        "proof": {
                            "type": "string",
                            "description": "hex(HMAC-SHA256(token, 'ipcwire-http-server' 00 "
                            "nonce 00 channel)), when the request had a nonce and the server "
                            "a token",
                        },
                        "tells_failure": {
                            "type": "boolean",
                            "description": f"the server reads {FAILED_HEADER}",
                        },
                    },
                },
            }
        },
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return msgspec.json.encode(doc)
