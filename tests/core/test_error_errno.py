"""The errors that are OSErrors carry the errno they stand for, so that
``except OSError as e: e.errno == errno.ECONNREFUSED`` (or ENOENT) matches them as it matches
the kernel's own, also after a pickle round trip (multiprocessing sends errors between
processes). Before, both had errno None (helper-157's API audit)."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

import ipcwire
from ipcwire.errors import ConnectionRefused, ProgramNotFound


def test_a_real_refusal_and_a_real_missing_program(tmp_path: Path) -> None:
    with pytest.raises(OSError) as refused:
        ipcwire.connect(f"unix://{tmp_path}/nobody.sock", timeout=2)
    assert isinstance(refused.value, ConnectionRefused)
    assert refused.value.errno == errno.ECONNREFUSED
    with pytest.raises(OSError) as missing:
        ipcwire.spawn([str(tmp_path / "no-such-program")])
    assert isinstance(missing.value, ProgramNotFound)
    assert missing.value.errno == errno.ENOENT
    for err in (refused.value, missing.value):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err)
        assert again.errno == err.errno and str(again) == str(err)
        assert again.endpoint == err.endpoint


def test_the_message_stays_the_text() -> None:
    err = ConnectionRefused("nothing listens at unix:///x", endpoint="unix:///x")
    assert str(err) == "nothing listens at unix:///x"
    assert err.errno == errno.ECONNREFUSED and err.endpoint == "unix:///x"
