"""A program that an uncaught exception ends, with a shm channel still open (a module
global, never closed): the peer gets the messages, then ChannelBroken naming the exception's
type, as on unix and tcp (it saw a clean end: the ring's close at interpreter shutdown). A
program that ends normally still ends its channel cleanly."""

from __future__ import annotations

import os

import pytest
from tests._proc import python, wait_line

import ipcwire


@pytest.mark.parametrize("fails", [False, True])
def test_a_program_ended_by_an_uncaught_exception_says_so(fails: bool) -> None:
    with ipcwire.listen(f"shm://ipcwire-exit-{os.getpid()}-{int(fails)}") as lst:
        proc = python(
            f"""
            import ipcwire
            ch = ipcwire.connect({str(lst.url)!r}, timeout=20)
            ch.send(b"before")
            print("sent", flush=True)
            input()
            if {fails!r}:
                raise KeyError("inner detail")
            """
        )
        with lst.accept(timeout=20) as ch:
            assert wait_line(proc) == "sent"
            assert ch.recv(timeout=10) == b"before"
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            if fails:
                with pytest.raises(ipcwire.ChannelBroken, match="KeyError uncaught") as info:
                    ch.recv(timeout=10)
                assert "inner detail" not in str(info.value)
            else:
                with pytest.raises(ipcwire.EndOfChannel):
                    ch.recv(timeout=10)
        proc.communicate(timeout=20)
        assert proc.returncode == (1 if fails else 0)
