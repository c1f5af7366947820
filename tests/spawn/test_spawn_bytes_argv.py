"""spawn() takes bytes arguments, as subprocess does on POSIX (the way to pass a file name
that is not UTF-8): the child gets exactly those bytes and messages show them ``$'\\xff'``
(before: AttributeError 'bytes' object has no attribute 'isprintable'). Under an ASCII locale
(LC_ALL=C PYTHONUTF8=0) a str argument, cwd= or env= entry that cannot be encoded is a
ConfigurationError naming which one and the fix (before: subprocess's bare
UnicodeEncodeError). Both APIs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ipcwire.spawn import spawn
from ipcwire.spawn._common import Arg, describe_argv
from ipcwire.spawn.aio import spawn as aspawn

_WRITE = "import os, sys; open(sys.argv[1], 'wb').write(os.fsencode(sys.argv[2]))"


def test_bytes_argv_blocking(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv: list[Arg] = [sys.executable.encode(), b"-c", _WRITE, out, b"\xff\xc3\xa9"]
    with spawn(argv) as ch:
        assert repr(ch).startswith(f"<SpawnChannel spawn:{sys.executable} -c 'import os")
    assert describe_argv([b"/bin/x", b"\xff\xc3\xa9", Path("a b")]) == "/bin/x $'\\xff\u00e9' 'a b'"
    assert out.read_bytes() == b"\xff\xc3\xa9"


def test_bytes_argv_asyncio(tmp_path: Path) -> None:
    out = tmp_path / "out"

    async def main() -> None:
        argv: list[Arg] = [sys.executable, b"-c", _WRITE, bytes(out), b"\xfe"]
        async with await aspawn(argv):
            pass

    asyncio.run(main())
    assert out.read_bytes() == b"\xfe"


_CHILD = """
import asyncio, sys
import ipcwire
from ipcwire.spawn import spawn
from ipcwire.spawn.aio import spawn as aspawn
E = "\\u00e9"
def attempt(fn):
    try:
        fn()
        return "OK"
    except ipcwire.IpcwireError as exc:
        return type(exc).__name__ + " " + ascii(str(exc))
    except Exception as exc:
        return "UNTYPED " + ascii(repr(exc))
async def aio(argv, kw):
    await (await aspawn(argv, **kw)).aclose()
py = sys.executable
for argv, kw in [
    ([py, "-c", "pass", E], {}),
    ([py + E], {}),
    ([py, "-c", "pass"], {"cwd": "/tmp/" + E}),
    ([py, "-c", "pass"], {"env": {"X": E}}),
    ([py, "-c", "pass"], {"env": {E: "x"}}),
]:
    print(attempt(lambda: spawn(argv, **kw).close()))
    print(attempt(lambda: asyncio.run(aio(argv, kw))))
"""


def test_ascii_locale_typed_errors() -> None:
    env = dict(os.environ, LC_ALL="C", PYTHONUTF8="0")
    rows = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    names = [
        "argv[3]",
        "the program (argv[0])",
        "cwd=",
        "env= (the value of 'X')",
        "env= (the name",
    ]
    assert len(rows) == 2 * len(names)
    for i, row in enumerate(rows):
        assert row.startswith("ConfigurationError "), row
        assert names[i // 2] in row
        assert "cannot be encoded in this locale's file-system encoding (ascii" in row
        assert "PYTHONUTF8=1" in row
