"""The clipboard's options, read and checked once for both drivers (no I/O but finding the
tool, see ``_tools.py``)."""

from __future__ import annotations

import contextlib
from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire._deadline import NO_LIMIT
from ipcwire.clipboard._tools import Tool, pick_tool
from ipcwire.errors import ConfigurationError
from ipcwire.options import ChannelOptions, reject_unknown

__all__ = ["OPTIONS", "ClipboardOptions", "checked_options"]

OPTIONS: Final = ("tool", "selection", "reply", "display", "text", "poll_interval", "timeout")


class ClipboardOptions:
    """The clipboard's own options, from keyword arguments and the URL's query."""

    def __init__(self, endpoint: Endpoint, options: ChannelOptions, kw: dict[str, Any]):
        q = endpoint.params
        raw = {name: kw.pop(name, q.get(name)) for name in OPTIONS}
        reject_unknown(kw, endpoint, OPTIONS)
        selection = raw["selection"] or "clipboard"
        self.tool: Tool = pick_tool(raw["tool"], selection=selection, display=raw["display"])
        # reply=: answers travel on the other X selection, so a request and its answer do not
        # overwrite each other (the connecting side sends on `selection` and reads `reply`,
        # the listening side the other way round)
        self.reply_tool: Tool | None = None
        if raw["reply"]:
            if raw["reply"] == selection:
                raise ConfigurationError(
                    f"{endpoint}: reply={raw['reply']} must be the other selection than "
                    f"selection={selection} (one is 'clipboard', the other 'primary')"
                )
            if self.tool.name == "pbcopy":
                raise ConfigurationError(
                    f"{endpoint}: reply= needs a second selection; the macOS pasteboard has one"
                )
            self.reply_tool = pick_tool(
                self.tool.name, selection=raw["reply"], display=raw["display"]
            )
        text = raw["text"]
        if isinstance(text, str):
            text = text.lower() not in ("0", "false", "no", "off")
        # text (str in, str out) is the default for the bytes codec: clipboards hold text
        self.text = options.codec.name == "bytes" if text is None else bool(text)
        self.poll_interval = _poll_interval(raw["poll_interval"], endpoint)
        try:  # for opening: the first look at the clipboard
            self.timeout = None if raw["timeout"] is None else float(raw["timeout"])
        except ValueError:
            raise ConfigurationError(f"timeout for {endpoint} must be seconds") from None


def _poll_interval(value: object, endpoint: Endpoint) -> float:
    """``poll_interval=``: seconds, more than 0 and finite (None: 0.1).

    Raises:
        ConfigurationError: anything else (0 given as a keyword was taken for 0.1, NaN polled
            without pause, infinity raised OverflowError, a list TypeError).
    """
    if value is None:
        return 0.1
    seconds = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            seconds = float(value)
    if seconds is None or not 0 < seconds <= NO_LIMIT:  # (NaN too)
        raise ConfigurationError(
            f"poll_interval={value!r} for {endpoint}: give the seconds between checks, more "
            f"than 0 (0.1 by default)",
            endpoint=endpoint.url,
        )
    return seconds


def checked_options(
    endpoint: Endpoint, options: ChannelOptions, kw: dict[str, Any]
) -> ClipboardOptions:
    """The options of ``connect()`` and ``listen()``.

    Raises:
        ConfigurationError: a bad option, or a token (the clipboard cannot be authenticated).
        MechanismUnavailable: no display or no tool.
    """
    opts = ClipboardOptions(endpoint, options, kw)
    if options.token is not None:
        raise ConfigurationError(
            f"{endpoint}: the clipboard cannot be authenticated (anyone on the desktop reads "
            f"and writes it); drop token= (and codec='pickle')"
        )
    return opts
