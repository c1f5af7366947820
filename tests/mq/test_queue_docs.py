"""docs/mechanisms/mq.md's plain ``MessageQueue`` snippet runs as written, twice, and leaves
nothing behind; the errors of ``create()`` and ``open()`` give advice that works. Before, the
snippet never closed or unlinked its queue (``-W default``: ResourceWarning: unclosed
<MessageQueue /work ...>; the queue stayed until reboot), so a second run raised a bare
"AddressInUse: the queue /work already exists (mq:///work)", and ``open()`` of a missing
queue said "pass reconnect=SECONDS", a parameter open() does not have."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ipcwire.errors import AddressInUse, ConnectionRefused
from ipcwire.mq.blocking import MessageQueue

PAGE = Path(__file__).parent.parent.parent / "docs" / "mechanisms" / "mq.md"


def _snippet() -> str:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    found = [b for b in blocks if "MessageQueue.create(" in b]
    assert len(found) == 1, found
    return found[0]


def _name(mq_url: Callable[..., str]) -> str:
    return mq_url().removeprefix("mq://")  # a fresh name, checked to be gone after the test


def test_the_snippet_runs_twice_and_leaves_nothing(mq_url: Callable[..., str]) -> None:
    name = _name(mq_url)
    code = _snippet().replace('"/work"', repr(name)) + "print(data, priority)\n"
    assert repr(name) in code
    for _ in range(2):  # the second run found the first one's queue
        out = subprocess.run(
            [sys.executable, "-W", "default", "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == "b'job' 3\n"
        assert out.stderr == ""  # no ResourceWarning
    with pytest.raises(ConnectionRefused):
        MessageQueue.open(name)


def test_create_of_an_existing_queue_says_how_to_remove_it(mq_url: Callable[..., str]) -> None:
    name = _name(mq_url)
    MessageQueue.create(name).close()  # left over, as by a program that never unlinked it
    with pytest.raises(AddressInUse) as err:
        MessageQueue.create(name)
    text = str(err.value)
    assert f"MessageQueue.open('{name}')" in text and "exclusive=False" in text, text
    command = re.search(r"python -c (\".*?\")", text)
    assert command is not None, text
    # the command it gives removes the queue
    argv = [sys.executable, "-c", shlex.split(command.group(1))[0]]
    subprocess.run(argv, check=True, timeout=60)
    with MessageQueue.create(name) as q:
        q.unlink()


def test_open_of_a_missing_queue_gives_advice_that_exists(mq_url: Callable[..., str]) -> None:
    name = _name(mq_url)
    with pytest.raises(ConnectionRefused) as err:
        MessageQueue.open(name)
    text = str(err.value)
    assert text.startswith(f"there is no queue {name} (mq://{name}): create it first"), text
    assert f"MessageQueue.create('{name}')" in text
    assert "reconnect" not in text  # open() has no such parameter
