"""macOS XPC: ``xpc:``, registered so that every tool can say what it is and why it is not here.

XPC is macOS's native IPC: launchd starts a service on demand when a client first connects to
its Mach service name, passes typed dictionaries (and file descriptors, shared memory, other
connections) both ways, and reports the peer's audit token (pid, uid, code signature), so a
service can check *which signed program* is calling. It is what Apple's own daemons, app
extensions and privileged helpers use.

ipcwire does not drive XPC yet, on any platform: on macOS ``connect``/``listen`` raise
:class:`~ipcwire.errors.MechanismUnavailable` saying so (use ``unix://`` meanwhile); elsewhere
the registry refuses it by platform, and says there is no driver on macOS either
(:data:`NO_DRIVER`, which the registry and ``ipcwire choose`` read). Nothing in this repository
runs XPC: the capabilities below describe XPC itself, from Apple's documentation, for the
advisor and the docs.
"""

from __future__ import annotations

from ipcwire.registry import Capabilities, MechanismSpec

__all__ = ["NO_DRIVER", "SPEC", "UNAVAILABLE"]

UNAVAILABLE = (
    "ipcwire has no XPC driver yet, on any platform (XPC needs a launchd-registered Mach "
    "service and the Objective-C/C API); use unix:// sockets meanwhile, on macOS too"
)

# A mechanism package that defines NO_DRIVER has no driver on any platform: the registry's
# reason for another OS says so too (never "it works on darwin"), and ``ipcwire choose`` does
# not recommend it.
NO_DRIVER = UNAVAILABLE

SPEC = MechanismSpec(
    scheme="xpc",
    title="macOS XPC",
    summary="launchd-managed services, typed messages, code-signature checks (macOS only)",
    capabilities=Capabilities(
        bidirectional=True,
        reliable=True,
        ordered=True,
        message_boundaries=True,
        needs_daemon=True,  # launchd starts and supervises the service
        multi_client=True,
        peer_credentials=True,  # the audit token: pid, uid and code signature
        platforms=("darwin",),
    ),
    blocking="ipcwire.xpc.blocking",
    aio="ipcwire.xpc.aio",
    docs="docs/mechanisms/xpc.md",
    example_url="xpc:com.example.helper",
)
