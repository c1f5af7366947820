"""OSErrors become ipcwire errors with a message that names the endpoint and the fix.

A full file system (ENOSPC, EDQUOT, EFBIG) outside the spool's own send read "ChannelBroken
unix:///full/a.sock broke while listening on it: No space left on device", with no fix and
the wrong type (errors.md puts disk space under ResourceExhausted); a "doing" that has its own
object came out garbled ("broke while creating the spool it"); an address-space limit read
"the kernel is out of buffer memory" (helper-106's chaos walkthrough).
"""

from __future__ import annotations

import errno
import os

import pytest

from ipcwire._oserror import translate
from ipcwire.errors import ChannelBroken, PermissionDenied, ResourceExhausted

URL = "unix:///run/app.sock"


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the file system (or no free inodes: df -h, df -i)"),
        (errno.EDQUOT, "over your disk quota"),
        (errno.EFBIG, "over the file size limit (RLIMIT_FSIZE"),
    ],
)
def test_a_full_file_system_is_resource_exhausted_with_the_fix(code: int, words: str) -> None:
    err = translate(_err(code), URL, "listening on")
    assert isinstance(err, ResourceExhausted), err
    assert words in str(err) and URL in str(err) and err.endpoint == URL, err


def test_out_of_memory_names_the_address_space_limit() -> None:
    err = translate(_err(errno.ENOMEM), URL, "connecting to")
    assert isinstance(err, ResourceExhausted)
    assert "RLIMIT_AS" in str(err) and "buffer memory" not in str(err), err
    assert "buffer memory" in str(translate(_err(errno.ENOBUFS), URL, "sending to"))


def test_a_read_only_file_system_is_permission_denied() -> None:
    err = translate(_err(errno.EROFS), URL, "listening on")
    assert isinstance(err, PermissionDenied) and "read-only" in str(err), err


def test_the_generic_message_reads_right_whatever_the_doing() -> None:
    broken = translate(_err(errno.EIO), "spool:///q", "creating the spool")
    assert isinstance(broken, ChannelBroken)
    assert str(broken).startswith("spool:///q broke while creating the spool: "), broken
    assert str(translate(_err(errno.EIO), URL, "listening on")).startswith(
        f"{URL} broke while listening on it: "
    )
    assert str(translate(_err(errno.EIO), URL, "sending")).startswith(
        f"{URL} broke while sending it: "
    )
