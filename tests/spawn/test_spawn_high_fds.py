"""A parent with many files open: the child's pidfd gets a number above 1023, which select()
refuses ("filedescriptor out of range"). recv() at the end of the child's stdout, wait() and
close() must work all the same (they wait on the pidfd with poll())."""

from __future__ import annotations

import json

from tests._proc import run_python

PARENT = """
import json, os, resource, sys
import ipcwire

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
fill = []
while (fd := os.open("/dev/null", os.O_RDONLY)) < 1100:
    fill.append(fd)
os.close(fd)

# the child answers, closes its stdout and stays until its stdin ends
child = "import os; os.write(1, b'{}\\\\n'); os.close(1); os.read(0, 1)"
ch = ipcwire.spawn([sys.executable, "-c", child])
out = {"pidfd": ch._watch.pidfd, "first": ch.recv(timeout=20)}
try:
    ch.recv(timeout=20)
except Exception as exc:
    out["end"] = type(exc).__name__ + ": " + str(exc)
try:
    out["wait"] = ch.wait(timeout=0)
except Exception as exc:
    out["wait"] = type(exc).__name__ + ": " + str(exc)
ch.close()
out["returncode"] = ch.returncode
print(json.dumps(out))
"""


def test_a_child_watched_on_a_descriptor_above_1023() -> None:
    out = json.loads(run_python(PARENT))
    assert out["pidfd"] > 1023, out
    assert out["first"] == {}
    assert out["end"].startswith("EndOfChannel: "), out
    assert "the child is still running" in out["end"], out
    assert out["wait"] is None, out  # still running: no exit status yet
    assert out["returncode"] == 0, out  # it left on the end of its stdin
