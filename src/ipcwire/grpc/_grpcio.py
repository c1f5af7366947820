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

import os
import sys

if "grpc" not in sys.modules:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc

__all__ = ["grpc"]
