"""Run Python code in a child process that sees a tiny tmpfs over a directory (a full disk,
or one out of inodes), in a mount namespace of its own: the mount goes with the child, and
nothing else on the machine sees it. Needs root and unshare(1), as the tests run here.

Used by the shm, mq, fifo and doctor tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_on_tmpfs(
    code: str,
    where: str,
    options: str,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    fill: int = 0,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Mount a tmpfs with ``options`` (``size=64k,nr_inodes=2``) over ``where`` in a new
    mount namespace, create ``fill`` empty files in it (to use up its inodes), then run
    ``code`` with this interpreter (``prefix`` goes before it: ``prlimit --nofile=64``);
    ``args`` are its ``sys.argv[1:]``. The namespace, and so the mount, ends with the child."""
    assert os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare(1)"
    exe, env = _reachable(where, env)
    script = (
        '{ [ -z "$MOVED" ] || mount --bind "$2" /mnt; } && '
        'mount -t tmpfs -o "$1" none "$2" && i=0 && while [ "$i" -lt "$3" ]; do '
        ': > "$2/fill.$i" || exit 97; i=$((i+1)); done && shift 3 && exec "$@"'
    )
    return subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            options,
            where,
            str(fill),
            *prefix,
            exe,
            "-c",
            code,
            *args,
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env,
    )


def _reachable(where: str, env: dict[str, str] | None) -> tuple[str, dict[str, str]]:
    """The interpreter to run, and the environment, when ``where`` hides them: a checkout (and
    its virtual environment) under /tmp, as CI's may be, is under a tmpfs mounted on /tmp.
    Then the old ``where`` is bound on /mnt first (``MOVED``), and the child runs this
    interpreter and imports ipcwire from there."""
    import ipcwire

    env = dict(os.environ if env is None else env)
    top = where.rstrip("/") + "/"
    exe = os.path.abspath(sys.executable)  # (not resolved: the venv's own path)
    src = str(Path(ipcwire.__file__).resolve().parents[1])
    if not (exe.startswith(top) or src.startswith(top)):
        return sys.executable, env
    moved = {p: "/mnt/" + p[len(top) :] if p.startswith(top) else p for p in (exe, src)}
    env["MOVED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [moved[src], *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return moved[exe], env
