"""grpcio, as every module of this driver imports it: with grpc's fork support off unless the
program chose otherwise (``GRPC_ENABLE_FORK_SUPPORT``, read once, when grpc is first
imported).

With it on (grpcio's default here), a process forked while an RPC was in flight (an open
``grpc:`` channel, whose reader waits inside grpc) printed "Other threads are currently
calling into gRPC, skipping fork() handlers" and the child sometimes died in grpc's own fork
handling (SIGSEGV or SIGABRT, about one fork in ten here) even when it never used grpc: a
``multiprocessing`` worker, a prefork server. grpc's fork support exists for children that
use grpc after fork with no RPC in flight (grpc's doc/fork_support.md); a program that needs
it sets ``GRPC_ENABLE_FORK_SUPPORT=true`` itself before ipcwire loads this driver, or imports
grpc first. Either way ipcwire's objects in a child never call into grpc (their ``close()``
there only marks them closed).
"""

from __future__ import annotations

import errno
import os
import sys

if "grpc" not in sys.modules:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc

from ipcwire._oserror import translate
from ipcwire.errors import ResourceExhausted

__all__ = ["ensure_descriptors", "grpc"]

# gRPC's core creates descriptors of its own (an epoll set, eventfds) when it starts, and
# again after it shut down because no channel or server was left; one it cannot create is a
# failed check that aborts the whole process (SIGABRT, "epoll_create1 unavailable", "Check
# failed: init_epoll1_linux()"). Measured: a connect with 0 to 3 descriptors free aborted,
# with 4 it failed cleanly, with 5 it worked.
_ROOM = 8


def ensure_descriptors(url: str) -> None:
    """Refuse (ResourceExhausted) to call into gRPC with fewer than ``_ROOM`` descriptors
    free, since gRPC would abort the process instead of failing.

    Raises:
        ResourceExhausted: naming the limit and the fix.
    """
    fds: list[int] = []
    try:
        for _ in range(_ROOM):
            fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return  # no /dev/null (a bare chroot, say): nothing learnt, gRPC will tell
        err = translate(exc, url, "starting gRPC for")
        raise ResourceExhausted(
            f"{err} (gRPC needs about {_ROOM} free to start, and would abort the whole process "
            f"without them)",
            endpoint=url,
        ) from exc
    finally:
        for fd in fds:
            os.close(fd)
