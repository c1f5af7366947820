"""A child for the conformance suite: copies stdin to fd OUT and fd IN to stdout.

The test keeps the other ends of those two pipes as the "child side" channel, so the suite
drives both ends of a real spawn channel through a real child process. The child exits as
soon as its stdin ends (like a well-behaved agent), after closing fd OUT.
"""

from __future__ import annotations

import os
import sys
import threading


def pump(src: int, dst: int, then_exit: bool) -> None:
    try:
        while data := os.read(src, 1 << 16):
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view) :]
    except OSError:
        pass
    os.close(dst)
    if then_exit:
        os._exit(0)


def main() -> None:
    fd_in, fd_out = int(sys.argv[1]), int(sys.argv[2])
    t = threading.Thread(target=pump, args=(fd_in, 1, False), daemon=True)
    t.start()
    pump(0, fd_out, True)


if __name__ == "__main__":
    main()
