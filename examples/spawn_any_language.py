"""A child in any language: here a shell script that speaks JSON lines on stdin/stdout.

Run: python examples/spawn_any_language.py
"""

from __future__ import annotations

import ipcwire

SCRIPT = r"""
while read -r line; do
    echo "{\"shell_saw\": $line}"
done
echo "the shell is done" >&2
"""

with ipcwire.spawn(["sh", "-c", SCRIPT], stderr=lambda line: print("child stderr:", line)) as sh:
    sh.send_many([{"n": 1}, [1, 2, 3], "text"])
    for _ in range(3):
        print("reply:", sh.recv(timeout=5))
print("exit status:", sh.returncode)
