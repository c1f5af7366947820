"""The clipboard tools run directly, as the ``ipcwire bench`` baseline ``raw/clipboard``.

What a script does without ipcwire: side B copies the message to the CLIPBOARD selection by
running the copy tool (``xclip -selection clipboard -i``, or xsel, or wl-copy), side A runs
the paste tool back to back until the content changes, then copies it to the PRIMARY
selection, where B polls for it the same way. Round trips only: a clipboard is one slot, so
a stream of messages would overwrite what the reader has not seen yet (throughput cannot be
verified), and a round trip needs a second slot for the answer. Each step is a process start
and an X (or Wayland) round trip: milliseconds, which is the point of measuring it.

Without a display (no ``DISPLAY`` or ``WAYLAND_DISPLAY``) or without a tool, the row is a
note in the report (``MechanismUnavailable``), not a failure. Imported by the bench (listed
in ``CONTENDER_MODULES``); registers its contender.
"""

from __future__ import annotations

import subprocess
from typing import Any, Final

from ipcwire.bench.contender import Contender, Task, register_contender
from ipcwire.clipboard._tools import Tool, pick_tool
from ipcwire.errors import MechanismUnavailable

__all__ = ["CONTENDER"]

_TIMEOUT: Final = 10.0


def _selections() -> tuple[Tool, Tool]:
    """The tool for the CLIPBOARD selection (B to A) and for PRIMARY (A to B).

    Raises:
        MechanismUnavailable: no display or no tool, or only one slot (macOS).
    """
    there = pick_tool(selection="clipboard")
    if there.name == "pbcopy":
        raise MechanismUnavailable(
            "raw/clipboard needs two selections (CLIPBOARD and PRIMARY) for a round trip; "
            "the macOS pasteboard has one"
        )
    return there, pick_tool(there.name, selection="primary")


class _Slot:
    """One selection, written and read by running the tool."""

    def __init__(self, tool: Tool) -> None:
        self._tool = tool
        self.last = self.paste()  # what was there before: not a message

    def paste(self) -> bytes | None:
        tool = self._tool
        run = subprocess.run(
            tool.paste, capture_output=True, env=tool.env, timeout=_TIMEOUT, check=False
        )
        return run.stdout if run.returncode == 0 else None

    def copy(self, data: bytes) -> None:
        tool = self._tool
        # The copy tool forks a server that keeps the selection: no pipe for it to hold.
        subprocess.run(
            tool.copy,
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=tool.env,
            timeout=_TIMEOUT,
            check=True,
        )
        self.last = data

    def next_change(self) -> bytes:
        """Paste until the content differs from the last seen (or copied) one."""
        while True:
            now = self.paste()
            if now is not None and now != self.last:
                self.last = now
                return now


class _Link:
    def __init__(self, out: _Slot, inbox: _Slot) -> None:
        self._out = out
        self._in = inbox

    def send(self, message: bytes) -> None:
        self._out.copy(bytes(message))

    def recv(self) -> bytes:
        return self._in.next_change()

    def close(self) -> None:
        pass  # what was copied stays on the clipboard


class _Acceptor:
    def __init__(self) -> None:
        there, back = _selections()
        self._link = _Link(_Slot(back), _Slot(there))
        self.address = "clipboard:"

    def accept(self) -> _Link:
        return self._link

    def close(self) -> None:
        pass


def side_a(task: Task, shared: Any) -> _Acceptor:
    return _Acceptor()


def side_b(task: Task, address: str, shared: Any) -> _Link:
    there, back = _selections()
    return _Link(_Slot(there), _Slot(back))


CONTENDER: Final = Contender(
    id="raw/clipboard",
    title="clipboard tool, run directly",
    group="baseline",
    mechanism="clipboard",
    api="blocking",
    side_a=side_a,
    side_b=side_b,
    framing="the whole selection",
    overhead=0,
    kinds=("round_trip",),
    max_size=64 * 1024,
    note="xclip (or xsel, wl-copy) per message; B -> A on CLIPBOARD, A -> B on PRIMARY, "
    "pasting back to back until the content changes",
)

register_contender(CONTENDER)
