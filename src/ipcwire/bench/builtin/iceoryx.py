"""iceoryx2's Python bindings: zero-copy shared-memory publish/subscribe, busy-polling.

Two services per measurement (B to A, A to B), each ``publish_subscribe(Slice[c_uint8])``:
a round trip is a request published on the first and the echo published back on the second,
each sent through a loan, so the row measures iceoryx2's Python round trip (what issue 3's
``spin`` target compares with). Each service has safe overflow off and the publisher's
backpressure strategy ``RetryUntilDelivered`` (iceoryx2's default overwrites the oldest
samples when a subscriber falls behind). With iceoryx2 0.10's Python binding that is not
enough: ``send()`` still returns 0 (delivered to no subscriber) when the buffer is full, and
the message is gone, which this bench's verification caught as dropped messages. So ``send``
loans a slice, copies the message in, sends it, and does it again until ``send()`` reports a
delivery. ``recv`` polls ``receive()`` until a sample is there (iceoryx2's Python API has no
blocking receive on a subscriber: waking up needs a separate event service), copies the
payload out and releases the sample. So this row spins: its CPU column shows what that costs,
and on a machine with more runnable processes than CPUs its round trips stretch to scheduler
time slices. Its baseline is ``raw/shm``, the pure-Python mmap ring (``ipcwire.shm._bench``).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Final

from ipcwire.bench.contender import Contender, Task

__all__ = ["ICEORYX2"]

_BUFFER: Final = 256  # samples a subscriber may hold


def _service(node: Any, name: str) -> Any:
    import iceoryx2 as iox2

    return (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .enable_safe_overflow(False)
        .subscriber_max_buffer_size(_BUFFER)
        .open_or_create()
    )


class _Link:
    def __init__(self, base: str, size: int, *, is_a: bool) -> None:
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        self._node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        to_a = _service(self._node, base + "/to-a")
        to_b = _service(self._node, base + "/to-b")
        self._sub = (to_a if is_a else to_b).subscriber_builder().buffer_size(_BUFFER).create()
        self._pub = (
            (to_b if is_a else to_a)
            .publisher_builder()
            .initial_max_slice_len(size)
            .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self._loan = self._pub.loan_slice_uninit
        self._receive = self._sub.receive
        self.address = base

    def send(self, message: bytes) -> None:
        n = len(message)
        while True:
            sample = self._loan(n)
            ctypes.memmove(sample.payload_ptr, message, n)
            if sample.assume_init().send():  # subscribers reached; 0: buffer full, retry
                return

    def recv(self) -> bytes:
        receive = self._receive
        sample = receive()
        while sample is None:
            sample = receive()
        data = ctypes.string_at(sample.payload_ptr, sample.payload().len())
        sample.delete()
        return data

    def accept(self) -> _Link:
        return self

    def close(self) -> None:
        self._pub.delete()
        self._sub.delete()


def side_a(task: Task, shared: Any) -> _Link:
    base = f"ipcwire-bench/{os.getpid()}/{task.serial}"
    return _Link(base, task.size, is_a=True)


def side_b(task: Task, address: str, shared: Any) -> _Link:
    return _Link(address, task.size, is_a=False)


ICEORYX2: Final = Contender(
    id="peer/iceoryx2",
    title="iceoryx2 (spin)",
    group="peer",
    mechanism="shm",
    api="blocking",
    side_a=side_a,
    side_b=side_b,
    wait="spin",
    requires=("iceoryx2",),
    baseline="raw/shm",
    framing="none: one shared-memory sample per message",
    overhead=0,
    note="publish/subscribe, Slice[c_uint8], loan + memmove + send, re-sent until delivered "
    "(a full buffer drops it otherwise); receive() polled; safe overflow off, 256-sample "
    "buffers",
)
