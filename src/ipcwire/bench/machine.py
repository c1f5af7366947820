"""A description of the machine the numbers were measured on: what explains them.

Everything is read best-effort from /proc and /sys (Linux) or the platform module; a value
that cannot be read is None, never a guess. The ``explanations`` are plain sentences the
report prints under the table (for example: a virtual machine whose guest halt-polling is
off pays a hypervisor exit on every blocking wake-up).
"""

from __future__ import annotations

import fcntl
import os
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["describe_machine", "explain", "implementation", "implementation_warning"]

_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo")
    if text:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except OSError:
            return None
    return platform.processor() or None


def _cpu_flags() -> set[str]:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _virtualisation() -> dict[str, Any]:
    out: dict[str, Any] = {"hypervisor_flag": "hypervisor" in _cpu_flags()}
    tool = shutil.which("systemd-detect-virt")
    if tool:
        for flag, key in (("--vm", "vm"), ("--container", "container")):
            try:
                res = subprocess.run(
                    [tool, flag], capture_output=True, text=True, timeout=5, check=False
                )
                value = res.stdout.strip()
                out[key] = value if value and value != "none" else None
            except OSError:
                pass
    out["dmi_vendor"] = _read("/sys/class/dmi/id/sys_vendor")
    out["dmi_product"] = _read("/sys/class/dmi/id/product_name")
    if out.get("vm") is None and out["hypervisor_flag"]:
        out["vm"] = "unknown hypervisor"
    return out


def _cpuidle() -> dict[str, Any]:
    base = "/sys/devices/system/cpu/cpuidle"
    states = []
    for state in sorted(Path("/sys/devices/system/cpu/cpu0/cpuidle").glob("state*")):
        states.append(
            {
                "name": _read(str(state / "name")),
                "latency_us": _read_int(str(state / "latency")),
                "disabled": _read(str(state / "disable")) == "1",
            }
        )
    haltpoll = {
        name: _read(f"/sys/module/haltpoll/parameters/{name}")
        for name in ("guest_halt_poll_ns", "guest_halt_poll_grow", "guest_halt_poll_shrink")
    }
    return {
        "driver": _read(f"{base}/current_driver"),
        "governor": _read(f"{base}/current_governor_ro") or _read(f"{base}/current_governor"),
        "states": states,
        "guest_halt_poll": haltpoll if any(v is not None for v in haltpoll.values()) else None,
        "kvm_halt_poll_ns": _read_int("/sys/module/kvm/parameters/halt_poll_ns"),
        "cpufreq_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }


def _pipe_size() -> int | None:
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        return int(fcntl.fcntl(w, _F_GETPIPE_SZ))
    except OSError:
        return None
    finally:
        os.close(r)
        os.close(w)


def _mqueue() -> dict[str, Any]:
    limits: dict[str, Any] = {
        name: _read_int(f"/proc/sys/fs/mqueue/{name}")
        for name in ("msg_max", "msgsize_max", "queues_max", "msg_default", "msgsize_default")
    }
    rlimit = getattr(resource, "RLIMIT_MSGQUEUE", None)
    if rlimit is not None:
        soft, _hard = resource.getrlimit(rlimit)
        limits["rlimit_bytes"] = None if soft == resource.RLIM_INFINITY else soft
    return limits


def _shm_bytes() -> int | None:
    try:
        st = os.statvfs("/dev/shm")  # noqa: S108 - only its size is read
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def implementation() -> dict[str, Any]:
    """Which of ipcwire's code paths this process runs: whether the C extension
    (``ipcwire._ext._native``) imports, and whether the shared-memory ring and the Unix/TCP
    stream sender use it or their pure-Python fallbacks (``IPCWIRE_SHM_IMPL=python``,
    ``IPCWIRE_STREAM_IMPL=python``, or no extension built)."""
    error = None
    try:
        from ipcwire._ext import _native  # noqa: F401
    except ImportError as exc:
        error = str(exc) or type(exc).__name__
    from ipcwire._stream import native as stream
    from ipcwire.shm import _ring

    return {
        "extension": error is None,
        "extension_error": error,
        "shm_ring": _ring.IMPLEMENTATION,
        "stream_sender": "c" if stream.FRAME_SENDER is not None else "python",
        "environment": {
            name: os.environ[name]
            for name in ("IPCWIRE_SHM_IMPL", "IPCWIRE_STREAM_IMPL")
            if name in os.environ
        },
    }


def implementation_warning(impl: dict[str, Any] | None) -> str | None:
    """A warning when the run did not use the C paths everywhere an install with the
    extension would (None: it did, or the report does not say)."""
    if not impl:
        return None
    if not impl.get("extension"):
        return (
            f"WARNING: ipcwire's C extension did not load ({impl.get('extension_error')}): the "
            f"shm ring and the unix/tcp sender ran their pure-Python fallbacks, slower than an "
            f"install with the extension, and the C floor could not be measured"
        )
    python = [
        what
        for key, what in (("shm_ring", "the shm ring"), ("stream_sender", "the unix/tcp sender"))
        if impl.get(key) == "python"
    ]
    if not python:
        return None
    env = ", ".join(f"{k}={v}" for k, v in (impl.get("environment") or {}).items())
    return (
        f"WARNING: {' and '.join(python)} ran the pure-Python path"
        f"{f' ({env})' if env else ''}, slower than ipcwire's usual C path"
    )


def describe_machine(pinning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine as plain data (the ``machine`` object of the JSON report)."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "smt_active": _read("/sys/devices/system/cpu/smt/active"),
        "system": platform.system(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "virtualisation": _virtualisation(),
        "cpuidle": _cpuidle(),
        "pinning": pinning or {},
        "pipe_buffer_bytes": _pipe_size(),
        "pipe_max_bytes": _read_int("/proc/sys/fs/pipe-max-size"),
        "socket_buffer_bytes": {
            "rmem_default": _read_int("/proc/sys/net/core/rmem_default"),
            "wmem_default": _read_int("/proc/sys/net/core/wmem_default"),
        },
        "mqueue": _mqueue(),
        "dev_shm_bytes": _shm_bytes(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def explain(machine: dict[str, Any]) -> list[str]:
    """Sentences that explain the numbers from the machine description."""
    out: list[str] = []
    virt = machine.get("virtualisation") or {}
    idle = machine.get("cpuidle") or {}
    vm = virt.get("vm")
    if vm:
        poll = (idle.get("guest_halt_poll") or {}).get("guest_halt_poll_ns")
        if poll is not None and poll.strip() == "0":
            out.append(
                f"Virtual machine ({vm}) with guest halt-polling off (guest_halt_poll_ns=0): "
                f"a process that sleeps in the kernel is woken through the hypervisor, which "
                f"costs tens of microseconds per blocking wake-up. Mechanisms that park pay it "
                f"on every round trip; only spinning avoids it (at the price of a busy core)."
            )
        elif idle.get("driver") == "haltpoll":
            out.append(
                f"Virtual machine ({vm}) with the haltpoll cpuidle driver: idle CPUs poll "
                f"briefly before halting, which shortens wake-ups that come quickly."
            )
        else:
            out.append(
                f"Virtual machine ({vm}): blocking wake-ups across cores may go through the "
                f"hypervisor and cost tens of microseconds."
            )
    elif virt.get("container"):
        out.append(f"Running in a container ({virt['container']}).")
    pin = machine.get("pinning") or {}
    if pin.get("mode") == "separate":
        out.append(f"The two processes were pinned to CPUs {pin.get('cpus')}.")
    elif pin.get("mode") == "same":
        out.append(f"Both processes were pinned to the same CPU {pin.get('cpus')}.")
    else:
        out.append("The processes were not pinned; the scheduler placed them.")
    load = machine.get("load_average")
    after = machine.get("load_average_after")
    cpus = machine.get("logical_cpus") or 1
    if load and load[0] > 0.5 * cpus:
        out.append(
            f"The machine was busy before the run (load average {load[0]:.2f} on {cpus} "
            f"CPUs): expect wider spreads."
        )
    if after and after[0] > cpus + 1:
        out.append(
            f"Other work ran during the run (load average {after[0]:.2f} at the end, on "
            f"{cpus} CPUs; the bench itself accounts for about 2): the spreads show how much "
            f"it mattered."
        )
    return out
