"""Listening on a read-only file system (a read-only container's /tmp): the error says the
file system is read-only, not that uid 0 may not write to a 1777 directory. A real read-only
tmpfs on /tmp, in a mount namespace of the child's own (``unshare --mount``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, os, ipcwire, ipcwire.unix.blocking, ipcwire.shm.blocking
from ipcwire.doctor.unix import check_unix
os.environ.pop("XDG_RUNTIME_DIR", None)
out = []
for url in ("unix:///tmp/a.sock", "shm://iw-read-only"):
    try:
        ipcwire.listen(url).close()
        out.append("listening")
    except ipcwire.IpcwireError as e:
        out.append(f"{type(e).__name__}: {e}")
out.append([f.summary for f in check_unix("/tmp/a.sock", listen=True).findings])
print(json.dumps(out))
"""


# In the child's mount namespace: /tmp becomes an empty read-only tmpfs, except for the
# directories this interpreter and ipcwire live in when they are under /tmp (a checkout in
# /tmp, as CI's may be), bound back from the old /tmp (kept on /mnt for that).
READ_ONLY_TMP = """
mount --bind /tmp /mnt && mount -t tmpfs none /tmp || exit 1
for keep in $KEEP; do
    mkdir -p "$keep" && mount --bind "/mnt${keep#/tmp}" "$keep" || exit 1
done
mount -o remount,ro /tmp && exec "$@"
"""


def _under_tmp() -> str:
    """The directories the child needs that are under /tmp (space-separated)."""
    import ipcwire

    needed = {Path(sys.prefix).resolve(), Path(ipcwire.__file__).resolve().parents[1]}
    return " ".join(sorted(str(p) for p in needed if p.parts[:2] == ("/", "tmp")))


def test_listen_on_a_read_only_tmp_says_read_only() -> None:
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", READ_ONLY_TMP, "sh", sys.executable, "-c", CHILD],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "KEEP": _under_tmp()},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    unix, shm, doctor = json.loads(out.stdout)
    assert unix.startswith("PermissionDenied: cannot listen at unix:///tmp/a.sock: the file")
    assert "/tmp is read-only" in unix and "may not create files" not in unix
    assert shm.startswith("PermissionDenied: cannot create the socket directory /tmp/ipcwire-")
    assert "Read-only file system; set XDG_RUNTIME_DIR to a writable 0700 directory" in shm
    assert "shm:///path/of/your/choice.sock" in shm
    assert any("/tmp is read-only" in summary for summary in doctor)
