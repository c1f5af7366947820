"""A custom codec for tests of decode failures."""

from __future__ import annotations

from typing import Any


class FailsOnBad:
    """A custom codec: raw bytes, except that b"bad" does not decode (ValueError)."""

    name = "fails-on-bad"

    def encode(self, obj: Any) -> Any:
        return obj

    def decode(self, data: memoryview) -> Any:
        if bytes(data) == b"bad":
            raise ValueError("not decodable")
        return bytes(data)
