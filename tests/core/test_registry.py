"""The registry of mechanisms."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_a_failed_first_load_is_tried_again() -> None:
    """Out of file descriptors while the built-in mechanisms are first imported: that call
    fails, and once descriptors are free again the registry loads (it was left empty for the
    life of the process, so every connect said 'no mechanism handles the scheme')."""
    code = textwrap.dedent(
        """
        import os, resource
        import ipcwire
        import ipcwire.registry as registry

        lowest_free = os.open("/dev/null", os.O_RDONLY)  # the next fd any open() would get
        os.close(lowest_free)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no fd can be opened
        try:
            registry.lookup("mq")
            print("loaded without a free fd")
        except ipcwire.ResourceExhausted as exc:
            print("first load failed:", exc.__cause__.errno)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print("then:", registry.lookup("mq").schemes, len(registry.mechanisms()) > 10)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "first load failed: 24", out.stdout + out.stderr  # EMFILE
    assert lines[1] == "then: ('mq',) True", out.stdout + out.stderr


def test_out_of_descriptors_before_the_first_connect_is_resource_exhausted(
    tmp_path: Path,
) -> None:
    """The mechanisms' modules are imported on first use; with no descriptor free that import
    raised a bare OSError ("Too many open files: '.../unix/__init__.py'") from the first
    connect(), where the API promises ResourceExhausted. Once descriptors are free, the next
    connect() loads them after all."""
    script = f"""
import resource, ipcwire
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
keep = []
try:
    while True:
        keep.append(open("/dev/null"))
except OSError:
    pass
try:
    ipcwire.connect("unix://{tmp_path}/s.sock")
except ipcwire.ResourceExhausted as exc:
    print("ResourceExhausted", "out of file descriptors" in str(exc), "s.sock" in str(exc))
for f in keep:
    f.close()
try:
    ipcwire.connect("unix://{tmp_path}/s.sock")
except ipcwire.ConnectionRefused:
    print("ConnectionRefused")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["ResourceExhausted True True", "ConnectionRefused"], out
