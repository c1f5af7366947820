"""The measurement loops, run inside the worker processes; identical for every contender.

Round trip: side B (``ping``) sends a message and waits for it to come back; side A
(``echo``) checks each message and sends it back. Throughput: side B (``source``) sends as fast
as the contender accepts; side A (``sink``) checks and counts. Both phases start with a
warm-up whose end is marked by a ``WARM`` message; the measured phase ends with ``END``.

Round trips after idle time (``idle`` > 0, for rows whose wait policy is a choice): after the
warm-up and before ``WARM``, side B makes ``idle`` more round trips, each after ``gap``
seconds of ``time.sleep`` (``asyncio.sleep`` for an asyncio link): a sleep in the kernel, not
a spin, outside the timed part. Back to back, a ``hybrid`` wait never leaves its spin phase;
after idle time it has parked and pays the wake-up, as a service that is not saturated does.
They come before ``WARM``, so side A's counts and CPU times cover the back-to-back phase only.

Clocks: ``time.perf_counter_ns`` (CLOCK_MONOTONIC) for wall time, ``time.process_time``
(all threads of the process, so a library's helper thread is counted) for CPU time. Each
side reports only what it saw; the parent combines them.

Every loop checks each message's size and header and one CRC-32 in ``CRC_EVERY`` messages
(:mod:`ipcwire.bench.payload`); the checks cost the same for every contender.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ipcwire.bench.payload import CRC_EVERY, TAG_END, TAG_WARM, Pool

__all__ = [
    "aecho",
    "aping",
    "asink",
    "asource",
    "echo",
    "ping",
    "sink",
    "source",
]

_ns = time.perf_counter_ns
_cpu = time.process_time
_CRC_MASK = CRC_EVERY - 1


def _side(
    role: str, count: int, cpu0: float, cpu1: float, t0: int, t1: int, **extra: Any
) -> dict[str, Any]:
    return {
        "role": role,
        "count": count,
        "cpu_s": cpu1 - cpu0,
        "wall_s": (t1 - t0) / 1e9,
        **extra,
    }


# -- blocking ---------------------------------------------------------------------------------
def echo(link: Any, pool: Pool) -> dict[str, Any]:
    """Side A of a round trip: check each message, send it back; until ``END``."""
    recv = link.recv
    send = link.send
    size = pool.size
    headers = pool.headers
    mask = pool.mask
    i = 0
    start = 0
    cpu0 = _cpu()
    t0 = _ns()
    while True:
        m = recv()
        if len(m) == size and m[:8] == headers[i & mask]:
            if not i & _CRC_MASK:
                pool.check_crc(m, i)
            i += 1
            send(m)
            continue
        try:
            tag = pool.marker(m)
        except Exception:
            raise pool.mismatch(m, i) from None
        send(m)
        if tag == TAG_WARM:
            start = i
            cpu0 = _cpu()
            t0 = _ns()
        else:
            return _side("echo", i - start, cpu0, _cpu(), t0, _ns())


def ping(
    link: Any, pool: Pool, warmup: float, duration: float, idle: int = 0, gap: float = 0.0
) -> dict[str, Any]:
    """Side B of a round trip: returns the round-trip times of the measured phase (ns), and
    with ``idle`` those of ``idle`` round trips each made after ``gap`` s of idle time."""
    recv = link.recv
    send = link.send
    size = pool.size
    messages = pool.messages
    headers = pool.headers
    mask = pool.mask
    i = 0

    def check(r: Any, i: int) -> None:
        if len(r) != size or r[:8] != headers[i & mask]:
            raise pool.mismatch(r, i)
        if not i & _CRC_MASK:
            pool.check_crc(r, i)

    stop = _ns() + int(warmup * 1e9)
    while True:
        m = messages[i & mask]
        send(m)
        r = recv()
        check(r, i)
        i += 1
        if _ns() >= stop:
            break
    idle_samples: list[int] = []
    idle_t0 = _ns()
    sleep = time.sleep
    for _ in range(idle):
        sleep(gap)  # untimed: the peer waits for this long, as it would for a rare request
        m = messages[i & mask]
        a = _ns()
        send(m)
        r = recv()
        idle_samples.append(_ns() - a)
        check(r, i)
        i += 1
    idle_s = (_ns() - idle_t0) / 1e9
    send(pool.warm)
    if pool.marker(recv()) != TAG_WARM:
        raise pool.mismatch(pool.end, i)
    samples: list[int] = []
    append = samples.append
    start = i
    cpu0 = _cpu()
    t0 = _ns()
    stop = t0 + int(duration * 1e9)
    while True:
        m = messages[i & mask]
        a = _ns()
        send(m)
        r = recv()
        b = _ns()
        append(b - a)
        if len(r) != size or r[:8] != headers[i & mask]:
            raise pool.mismatch(r, i)
        if not i & _CRC_MASK:
            pool.check_crc(r, i)
        i += 1
        if b >= stop:
            break
    cpu1 = _cpu()
    t1 = _ns()
    send(pool.end)
    if pool.marker(recv()) != TAG_END:
        raise pool.mismatch(pool.warm, i)
    return _side("ping", i - start, cpu0, cpu1, t0, t1, samples_ns=samples,
                 **_idle_extra(idle_samples, idle_s, gap))  # fmt: skip


def _idle_extra(samples: list[int], seconds: float, gap: float) -> dict[str, Any]:
    """What a ping adds about its round trips after idle time (nothing when it made none)."""
    if not samples:
        return {}
    return {"idle_samples_ns": samples, "idle_s": seconds, "gap_s": gap}


def sink(link: Any, pool: Pool, batched: bool) -> dict[str, Any]:
    """Side A of a throughput run: check and count until ``END``; the rate is measured here,
    from the arrival of ``WARM`` to the arrival of ``END``."""
    size = pool.size
    headers = pool.headers
    mask = pool.mask
    i = 0
    start = 0
    cpu0 = _cpu()
    t0 = _ns()
    if batched:
        recv_many = link.recv_many
        while True:
            for m in recv_many():
                if len(m) == size and m[:8] == headers[i & mask]:
                    if not i & _CRC_MASK:
                        pool.check_crc(m, i)
                    i += 1
                    continue
                try:
                    tag = pool.marker(m)
                except Exception:
                    raise pool.mismatch(m, i) from None
                if tag == TAG_WARM:
                    start = i
                    cpu0 = _cpu()
                    t0 = _ns()
                else:
                    return _side("sink", i - start, cpu0, _cpu(), t0, _ns())
    recv = link.recv
    while True:
        m = recv()
        if len(m) == size and m[:8] == headers[i & mask]:
            if not i & _CRC_MASK:
                pool.check_crc(m, i)
            i += 1
            continue
        try:
            tag = pool.marker(m)
        except Exception:
            raise pool.mismatch(m, i) from None
        if tag == TAG_WARM:
            start = i
            cpu0 = _cpu()
            t0 = _ns()
        else:
            return _side("sink", i - start, cpu0, _cpu(), t0, _ns())


def source(link: Any, pool: Pool, warmup: float, duration: float, batch: int) -> dict[str, Any]:
    """Side B of a throughput run: send the pool over and over (whole batches with
    ``send_many`` when ``batch``), looking at the clock once per pool."""
    i = 0
    n = pool.mask + 1
    if batch:
        send_many = link.send_many
        batches = pool.batches(batch)
        stop = _ns() + int(warmup * 1e9)
        while _ns() < stop:
            for b in batches:
                send_many(b)
            i += n
        send_many([pool.warm])
        start = i
        cpu0 = _cpu()
        t0 = _ns()
        stop = t0 + int(duration * 1e9)
        while _ns() < stop:
            for b in batches:
                send_many(b)
            i += n
        send_many([pool.end])
    else:
        send = link.send
        messages = pool.messages
        stop = _ns() + int(warmup * 1e9)
        while _ns() < stop:
            for m in messages:
                send(m)
            i += n
        send(pool.warm)
        start = i
        cpu0 = _cpu()
        t0 = _ns()
        stop = t0 + int(duration * 1e9)
        while _ns() < stop:
            for m in messages:
                send(m)
            i += n
        send(pool.end)
    return _side("source", i - start, cpu0, _cpu(), t0, _ns())


# -- asyncio ----------------------------------------------------------------------------------
async def aecho(link: Any, pool: Pool) -> dict[str, Any]:
    """:func:`echo` for an asyncio link."""
    recv = link.recv
    send = link.send
    size = pool.size
    headers = pool.headers
    mask = pool.mask
    i = 0
    start = 0
    cpu0 = _cpu()
    t0 = _ns()
    while True:
        m = await recv()
        if len(m) == size and m[:8] == headers[i & mask]:
            if not i & _CRC_MASK:
                pool.check_crc(m, i)
            i += 1
            await send(m)
            continue
        try:
            tag = pool.marker(m)
        except Exception:
            raise pool.mismatch(m, i) from None
        await send(m)
        if tag == TAG_WARM:
            start = i
            cpu0 = _cpu()
            t0 = _ns()
        else:
            return _side("echo", i - start, cpu0, _cpu(), t0, _ns())


async def aping(
    link: Any, pool: Pool, warmup: float, duration: float, idle: int = 0, gap: float = 0.0
) -> dict[str, Any]:
    """:func:`ping` for an asyncio link (idle time: ``asyncio.sleep``, the loop waits in
    the kernel)."""
    recv = link.recv
    send = link.send
    size = pool.size
    messages = pool.messages
    headers = pool.headers
    mask = pool.mask
    i = 0
    stop = _ns() + int(warmup * 1e9)
    while True:
        await send(messages[i & mask])
        r = await recv()
        if len(r) != size or r[:8] != headers[i & mask]:
            raise pool.mismatch(r, i)
        i += 1
        if _ns() >= stop:
            break
    idle_samples: list[int] = []
    idle_t0 = _ns()
    for _ in range(idle):
        await asyncio.sleep(gap)
        m = messages[i & mask]
        a = _ns()
        await send(m)
        r = await recv()
        idle_samples.append(_ns() - a)
        if len(r) != size or r[:8] != headers[i & mask]:
            raise pool.mismatch(r, i)
        if not i & _CRC_MASK:
            pool.check_crc(r, i)
        i += 1
    idle_s = (_ns() - idle_t0) / 1e9
    await send(pool.warm)
    if pool.marker(await recv()) != TAG_WARM:
        raise pool.mismatch(pool.end, i)
    samples: list[int] = []
    append = samples.append
    start = i
    cpu0 = _cpu()
    t0 = _ns()
    stop = t0 + int(duration * 1e9)
    while True:
        m = messages[i & mask]
        a = _ns()
        await send(m)
        r = await recv()
        b = _ns()
        append(b - a)
        if len(r) != size or r[:8] != headers[i & mask]:
            raise pool.mismatch(r, i)
        if not i & _CRC_MASK:
            pool.check_crc(r, i)
        i += 1
        if b >= stop:
            break
    cpu1 = _cpu()
    t1 = _ns()
    await send(pool.end)
    if pool.marker(await recv()) != TAG_END:
        raise pool.mismatch(pool.warm, i)
    return _side("ping", i - start, cpu0, cpu1, t0, t1, samples_ns=samples,
                 **_idle_extra(idle_samples, idle_s, gap))  # fmt: skip


async def asink(link: Any, pool: Pool, batched: bool) -> dict[str, Any]:
    """:func:`sink` for an asyncio link."""
    size = pool.size
    headers = pool.headers
    mask = pool.mask
    recv_many = link.recv_many if batched else None
    recv = link.recv
    i = 0
    start = 0
    cpu0 = _cpu()
    t0 = _ns()
    while True:
        batch = await recv_many() if recv_many is not None else (await recv(),)
        for m in batch:
            if len(m) == size and m[:8] == headers[i & mask]:
                if not i & _CRC_MASK:
                    pool.check_crc(m, i)
                i += 1
                continue
            try:
                tag = pool.marker(m)
            except Exception:
                raise pool.mismatch(m, i) from None
            if tag == TAG_WARM:
                start = i
                cpu0 = _cpu()
                t0 = _ns()
            else:
                return _side("sink", i - start, cpu0, _cpu(), t0, _ns())


async def asource(
    link: Any, pool: Pool, warmup: float, duration: float, batch: int
) -> dict[str, Any]:
    """:func:`source` for an asyncio link."""
    i = 0
    n = pool.mask + 1
    if batch:
        send_many = link.send_many
        batches = pool.batches(batch)
        stop = _ns() + int(warmup * 1e9)
        while _ns() < stop:
            for b in batches:
                await send_many(b)
            i += n
        await send_many([pool.warm])
        start = i
        cpu0 = _cpu()
        t0 = _ns()
        stop = t0 + int(duration * 1e9)
        while _ns() < stop:
            for b in batches:
                await send_many(b)
            i += n
        await send_many([pool.end])
    else:
        send = link.send
        messages = pool.messages
        stop = _ns() + int(warmup * 1e9)
        while _ns() < stop:
            for m in messages:
                await send(m)
            i += n
        await send(pool.warm)
        start = i
        cpu0 = _cpu()
        t0 = _ns()
        stop = t0 + int(duration * 1e9)
        while _ns() < stop:
            for m in messages:
                await send(m)
            i += n
        await send(pool.end)
    return _side("source", i - start, cpu0, _cpu(), t0, _ns())
