"""The event id of the last message a client's application took (``ch.last_event_id``).

The parser's position (``EventParser.last_id``) is how far the client has read the wire: what
its own reconnection resumes from, for the messages in between are in its queue already. An
application that saves an id to resume from after it restarts needs the id of the last
message it *took*: the parser's position runs ahead of it by whatever one read brought, and
resuming from there loses those messages without a gap (the server replays after it).

So the client notes, as it queues messages, which position each one reaches. ``taken`` is
how many items (messages, and the errors queued in their place) left the queue; the mark
kept for it is the id. The channels pop the queue directly (the usual ``recv`` takes no lock
and counts nothing), so ``taken`` is worked out from the queue's length when asked.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

__all__ = ["Delivered"]

# (end, n, text, first): n == 0: the position ``text`` is reached once ``end`` items were
# taken; n > 0: the items end - n + 1 .. end are the events ``text-first`` .. (a run of
# ipcwire's consecutive ids, noted once for the whole run).
_Mark: TypeAlias = tuple[int, int, str, int]


def _from(mark: _Mark) -> int:
    """How many items must have been taken for ``mark`` to hold."""
    end, n, _, _ = mark
    return end - n + 1 if n else end


def _id(mark: _Mark, taken: int) -> str:
    end, n, text, first = mark
    if not n:
        return text
    return f"{text}-{first + min(taken, end) - (end - n) - 1}"


class Delivered:
    """The positions of the items in a client's queue, oldest first."""

    __slots__ = ("_marks",)

    def __init__(self, start: str) -> None:
        self._marks: deque[_Mark] = deque([(0, 0, start, 0)])

    def at(self, items: int, event_id: str) -> None:
        """``event_id`` is reached once ``items`` items were taken (all those queued so far)."""
        marks = self._marks
        last = marks[-1]
        if _id(last, last[0]) != event_id:
            marks.append((items, 0, event_id, 0))

    def run(self, end: int, n: int, stream: str, first: int) -> None:
        """The items ``end - n + 1`` .. ``end`` are the events ``<stream>-<first>`` .. on."""
        self._marks.append((end, n, stream, first))

    def prune(self, taken: int) -> None:
        """Forget the marks behind the one that holds for ``taken`` (the feeding side)."""
        marks = self._marks
        while len(marks) > 1 and _from(marks[1]) <= taken:
            marks.popleft()

    def forget_after(self, items: int) -> None:
        """The items after ``items`` were thrown away (the channel broke): never taken."""
        marks = self._marks
        while len(marks) > 1 and _from(marks[-1]) > items:
            marks.pop()

    def last(self, taken: int) -> str:
        """The id of the last event taken, when ``taken`` items were."""
        marks = self._marks
        i = 0
        try:
            while i + 1 < len(marks) and _from(marks[i + 1]) <= taken:
                i += 1
            return _id(marks[i], taken)
        except IndexError:  # (pruned meanwhile by a receiving thread: ask again)
            return _id(marks[0], taken)
