"""spawn() of a program that cannot be found: ProgramNotFound (a ChannelBroken that ``except
FileNotFoundError`` catches too), whose message names the program, what was searched (PATH,
the path given, cwd=, a script's #! interpreter) and the fix, in the same words on both APIs;
the OSError is the ``__cause__``. A program that may not be executed: PermissionDenied with
the reason."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipcwire.errors import PermissionDenied, ProgramNotFound
from ipcwire.spawn import spawn
from ipcwire.spawn.aio import spawn as aspawn


def _errors(argv: list[str], **kw: Any) -> list[ProgramNotFound]:
    """The error of a blocking and of an asyncio spawn of ``argv`` (the same, it is checked)."""
    out: list[ProgramNotFound] = []
    attempts: list[Callable[[], object]] = [
        lambda: spawn(argv, **kw),
        lambda: asyncio.run(aspawn(argv, **kw)),
    ]
    for attempt in attempts:
        with pytest.raises(FileNotFoundError) as err:  # what a user would catch
            attempt()
        assert isinstance(err.value, ProgramNotFound)
        assert isinstance(err.value.__cause__, FileNotFoundError)
        out.append(err.value)
    assert str(out[0]) == str(out[1])
    assert out[0].endpoint == out[1].endpoint
    return out


def test_a_bare_name_not_on_path_names_the_path_searched(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {**os.environ, "PATH": str(bindir)}
    for exc in _errors(["no-such-program-h97"], env=env):
        text = str(exc)
        assert "'no-such-program-h97' was not found in PATH" in text, text
        assert str(bindir) in text, text
        assert "give its full path" in text and "add the directory" in text, text


def test_a_missing_path_says_no_such_file(tmp_path: Path) -> None:
    prog = tmp_path / "nowhere" / "prog"
    for exc in _errors([str(prog)]):
        text = str(exc)
        assert f"{str(prog)!r} was not found: there is no such file" in text, text
        assert "PATH" not in text, text


def test_a_script_whose_interpreter_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text("#!/nonexistent/python-h97\nprint('hi')\n")
    script.chmod(0o755)
    for exc in _errors([str(script)]):
        text = str(exc)
        assert "'/nonexistent/python-h97'" in text and "#!" in text, text


def test_a_missing_cwd_is_named_as_the_cwd(tmp_path: Path) -> None:
    cwd = tmp_path / "gone"
    for exc in _errors(["true"], cwd=cwd):
        text = str(exc)
        assert f"cwd={str(cwd)!r} does not exist" in text, text


def _denied(argv: list[str]) -> list[str]:
    out = []
    for attempt in (lambda: spawn(argv), lambda: asyncio.run(aspawn(argv))):
        with pytest.raises(PermissionDenied) as err:
            attempt()
        out.append(str(err.value))
    assert out[0] == out[1]
    return out


def test_a_program_that_is_not_executable_says_chmod(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    [text, _] = _denied([str(script)])
    assert f"{str(script)!r} is not executable; chmod +x it" in text, text


def test_a_directory_is_not_a_program(tmp_path: Path) -> None:
    [text, _] = _denied([str(tmp_path)])
    assert f"{str(tmp_path)!r} is a directory, not a program" in text, text
