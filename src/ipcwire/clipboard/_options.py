"""The clipboard's options, read and checked once for both drivers (no I/O but finding the
tool, see ``_tools.py``)."""

from __future__ import annotations

from typing import Any, Final

from ipcwire._core.url import Endpoint
from ipcwire.clipboard._tools import Tool, pick_tool
from ipcwire.errors import ConfigurationError
from ipcwire.options import ChannelOptions, flag_option, interval_option, reject_unknown

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
        # text (str in, str out) is the default for the bytes codec: clipboards hold text
        self.text = (
            options.codec.name == "bytes"
            if text is None
            else flag_option(text, "text", endpoint.url)
        )
        self.poll_interval = (
            0.1
            if raw["poll_interval"] is None
            else interval_option(
                raw["poll_interval"], "poll_interval", endpoint.url, "0.1 by default"
            )
        )
        try:  # for opening: the first look at the clipboard
            self.timeout = None if raw["timeout"] is None else float(raw["timeout"])
        except ValueError:
            raise ConfigurationError(f"timeout for {endpoint} must be seconds") from None


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
