"""The shared-memory ring in pure Python: the fallback when the C extension is not built.

Same memory layout, record format and protocol as ``src/ipcwire/_ext/ring.c``, so a C end and
a Python end interoperate; ``_pybase`` explains how the memory ordering is obtained without
atomics. This module has the producer and consumer operations, mirroring ``ringsend.c`` and
``ringrecv.c``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ipcwire.errors import (
    ChannelBroken,
    EndOfChannel,
    LocalProtocolError,
    RemoteProtocolError,
    Timeout,
)
from ipcwire.shm import _layout as L
from ipcwire.shm._pybase import (
    _ALIVE_EVERY,
    _REC,
    RingBase,
    _align,
    _fence,
    _monotonic,
    closed_wins,
    init_ring,
    release,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["PyRing", "init_ring"]


class PyRing(RingBase):
    """One end of a shared-memory ring; the same API as ``ipcwire._ext._native.Ring``."""

    # -- producer ----------------------------------------------------------------------------
    def _refresh_head(self) -> None:
        h = self._u64[L.HEAD]
        if h < self._peer or h > self._pub or h % L.ALIGN:
            raise self._fail("the consumer's head index is out of range")
        self._peer = h

    def _need(self, n: int) -> int:
        rec = _align(L.RECORD_HEADER + n)
        contig = self.capacity - (self._pos & self._mask)
        return contig if contig < rec else rec

    def _try_reserve(self, n: int) -> int | None:
        """Offset of the payload in the data area, or None when full."""
        if self._corrupt:
            raise self._corrupt_error()
        if self._u32[L.CONSUMER_CLOSED]:
            raise self._eof_error()
        cap = self.capacity
        rec = _align(L.RECORD_HEADER + n)
        off = self._pos & self._mask
        contig = cap - off
        if contig < rec:
            if cap - (self._pos - self._peer) < contig:
                self._refresh_head()
                if cap - (self._pos - self._peer) < contig:
                    return None
            _REC.pack_into(self._data, off, 0, L.PAD, 0)
            self._pos += contig
            off = 0
        if cap - (self._pos - self._peer) < rec:
            self._refresh_head()
            if cap - (self._pos - self._peer) < rec:
                return None
        return off + L.RECORD_HEADER

    def _reserve(self, n: int, deadline: float | None) -> int:
        while True:
            at = self._try_reserve(n)
            if at is not None:
                return at
            self._publish()
            self._wait(self._need(n), deadline)

    def _finish(self, n: int, kind: int, aux: int) -> None:
        _REC.pack_into(self._data, self._pos & self._mask, n, kind, aux)
        self._pos += _align(L.RECORD_HEADER + n)

    def _publish(self) -> None:
        if self._pos == self._pub:
            return
        self._u64[L.TAIL] = self._pos
        self._pub = self._pos
        _fence()
        if self._u32[L.CONSUMER_WAITING]:
            # take the flag (one doorbell per park, as the C ring's exchange). Not atomic here,
            # and safe: a waiter whose new flag this store overwrites set it after the load
            # above, so (Dekker) it sees the new tail and does not sleep
            self._u32[L.CONSUMER_WAITING] = 0
            self._w.signal()

    def _put_record(self, data: memoryview, kind: int, aux: int, deadline: float | None) -> None:
        at = self._reserve(len(data), deadline)
        self._data[at : at + len(data)] = data
        self._finish(len(data), kind, aux)

    def _put_message(self, data: memoryview, start: int, deadline: float | None) -> int:
        """Write the message from byte ``start`` on: one record, or fragments of a quarter
        ring each, published one by one. Returns where it got to (len(data): all of it);
        on an error, ``self._progress`` says how far it got."""
        n = len(data)
        frag = self._fragment
        self._progress = start
        if n <= frag:
            self._put_record(data, L.MSG, 0, deadline)
            self._progress = n
            return n
        off = start
        while off < n:
            chunk = min(frag, n - off)
            kind = L.FIRST if off == 0 else L.LAST if off + chunk == n else L.MIDDLE
            self._put_record(data[off : off + chunk], kind, n if off == 0 else 0, deadline)
            off += chunk
            self._progress = off
            self._publish()
        return n

    def _bytes_view(self, data: Buffer) -> memoryview:
        try:
            view = memoryview(data)
        except TypeError:
            raise LocalProtocolError(
                f"the bytes codec sends bytes-like objects, not {type(data).__name__}; encode "
                f"it first or open the channel with codec='json' or 'msgpack'",
                endpoint=self.name,
            ) from None
        if not view.c_contiguous:  # a strided view: a contiguous copy of its bytes, as in C
            return memoryview(view.tobytes())
        return view.cast("B")

    def _check_size(self, n: int) -> None:
        if n > self.max_send:
            raise self._too_large(n, self.max_send, loan="send")

    def _producer_ready(self, deadline: float | None) -> None:
        self._enter(True, deadline)
        if self._loan is not None:
            self._leave()
            raise LocalProtocolError(
                f"a loan on {self.name} is outstanding (loan() was not followed by "
                f"send_loan() or abort_loan(), perhaps because filling it raised): call "
                f"send_loan() or abort_loan() first, or fill loans in 'with ch.loaned(n) as "
                f"buf:', which gives the loan back when its body raises",
                endpoint=self.name,
            )
        if self._send_broken:
            self._leave()
            raise ChannelBroken(
                f"an earlier send to {self.name} stopped part-way through a message; the ring "
                f"is out of step, so open a new channel",
                endpoint=self.name,
            )

    def _check_alive(self) -> None:
        now = _monotonic()
        if now >= self._alive_at:
            self._alive_at = now + _ALIVE_EVERY
            if not self._w.alive():
                raise self._gone_error()

    def _sending(self, mv: memoryview, deadline: float | None) -> None:
        try:
            self._put_message(mv, 0, deadline)
        except BaseException as exc:
            if self._progress > 0:
                self._send_broken = True
                if isinstance(exc, Timeout):
                    raise self._timeout_error(partial=True) from None
            raise

    @closed_wins
    def send(self, data: Buffer, timeout: float | None = None) -> None:
        deadline = self._deadline(timeout)
        with self._bytes_view(data) as mv:
            self._check_size(len(mv))
            self._producer_ready(deadline)
            try:
                self._check_alive()
                self._sending(mv, deadline)
                self._publish()
                self.messages += 1
                self.nbytes += len(mv)
            finally:
                self._leave()

    @closed_wins
    def send_some(self, data: Buffer, offset: int = 0) -> int:
        """Write what fits now from ``offset`` on; the offset reached (len: complete), or -1
        when nothing could be written at offset 0."""
        with self._bytes_view(data) as mv:
            n = len(mv)
            if offset < 0 or offset > n or (offset > 0 and (offset == n or n <= self._fragment)):
                raise ValueError("send_some(): offset outside the message")
            self._check_size(n)
            self._producer_ready(0.0)
            try:
                if offset == 0:
                    self._check_alive()
                try:
                    self._put_message(mv, offset, 0.0)
                except Timeout:
                    return -1 if offset == 0 and self._progress == 0 else self._progress
                self._publish()
                self.messages += 1
                self.nbytes += n
                return n
            finally:
                self._leave()

    @closed_wins
    def send_many(self, items: Sequence[Buffer], timeout: float | None = None) -> None:
        deadline = self._deadline(timeout)
        views = [self._bytes_view(x) for x in items]
        for mv in views:
            self._check_size(len(mv))
        self._producer_ready(deadline)
        batch = self.capacity // 8
        done = 0  # whole messages written
        try:
            self._check_alive()
            for mv in views:
                self._sending(mv, deadline)
                done += 1
                self.messages += 1
                self.nbytes += len(mv)
                if self._pos - self._pub >= batch:
                    self._publish()
        except Timeout:
            if done == 0 or self._send_broken:
                raise
            # those before it are delivered: say so, or a caller retrying the batch duplicates
            raise Timeout(
                f"send_many to {self.name} timed out after {done} of its {len(views)} "
                f"messages: the ring is full and the peer is not reading; those {done} were "
                f"sent, the rest were not",
                endpoint=self.name,
            ) from None
        finally:
            if not self._closed and not self._corrupt:
                self._publish()
            self._leave()

    @closed_wins
    def loan(self, size: int, timeout: float | None = None) -> memoryview:
        deadline = self._deadline(timeout)
        if size < 0:
            raise ValueError("loan size must not be negative")
        self._check_size(size)
        self._producer_ready(deadline)
        try:
            if size > self.max_record:
                raise self._too_large(size, self.max_record, loan=True)
            self._check_alive()
            at = self._reserve(size, deadline)
            view = self._data[at : at + size]
            self._loan = (at, size, view)
            return view
        finally:
            self._leave()

    @closed_wins
    def commit(self, size: int | None = None) -> None:
        self._enter(True)
        try:
            if self._loan is None:
                raise LocalProtocolError(
                    f"nothing is loaned on {self.name}: call loan(n) first", endpoint=self.name
                )
            _, loaned, view = self._loan
            n = loaned if size is None else size
            if not 0 <= n <= loaned:
                raise ValueError(f"commit({size}): the loan is {loaned} bytes")
            self._loan = None
            release(view)
            self._finish(n, L.MSG, 0)
            self._publish()
            self.messages += 1
            self.nbytes += n
        finally:
            self._leave()

    def abort(self) -> None:
        if self._closed or self._loan is None:
            return
        self._enter(True)
        try:
            if self._loan is not None:
                release(self._loan[2])
                self._loan = None
        finally:
            self._leave()

    # -- consumer ----------------------------------------------------------------------------
    def _refresh_tail(self) -> None:
        t = self._u64[L.TAIL]
        if t < self._peer or t - self._pos > self.capacity or t % L.ALIGN:
            raise self._fail("the producer's tail index is out of range")
        self._peer = t

    def _peek(self) -> tuple[int, int, int, int, int] | None:
        """(payload offset, len, kind, aux, record size) of the next record, or None."""
        if self._corrupt:
            raise self._corrupt_error()
        cap = self.capacity
        while True:
            avail = self._peer - self._pos
            if avail == 0:
                self._refresh_tail()
                avail = self._peer - self._pos
                if avail == 0:
                    return None
            off = self._pos & self._mask
            n, kind, aux = _REC.unpack_from(self._data, off)
            if kind == L.PAD:
                if off == 0:  # (so a run of padding cannot go on for ever: one per lap)
                    raise self._fail("a padding record at the start of the ring")
                if cap - off > avail:
                    raise self._fail("a padding record covers bytes that were never written")
                self._pos += cap - off
                continue
            if kind > L.LAST:
                raise self._fail("unknown record kind")
            size = _align(L.RECORD_HEADER + n)
            if size > cap - off:
                raise self._fail("a record runs past the end of the ring")
            if size > avail:
                raise self._fail("a record is longer than the bytes written")
            return off + L.RECORD_HEADER, n, kind, aux, size

    def _next(self) -> tuple[int, int, int, int, int] | None:
        rec = self._peek()
        if rec is None and self._u32[L.PRODUCER_CLOSED]:
            rec = self._peek()  # tail was stored before the flag
            if rec is None:
                raise self._eof_error()
        return rec

    def _release(self) -> None:
        if self._pos == self._pub:
            return
        u64 = self._u64
        u64[L.HEAD] = self._pos
        self._pub = self._pos
        _fence()
        if self._u32[L.PRODUCER_WAITING]:
            used = u64[L.TAIL] - self._pos
            if used > self.capacity or self.capacity - used >= u64[L.PRODUCER_NEED]:
                self._u32[L.PRODUCER_WAITING] = 0  # take the flag (see _publish)
                self._w.signal()

    def _wait_record(self, deadline: float | None) -> tuple[int, int, int, int, int]:
        while True:
            rec = self._next()
            if rec is not None:
                return rec
            self._release()
            self._wait(0, deadline)

    def _end_view(self) -> None:
        if self._view is not None:
            size, view = self._view
            self._view = None
            release(view)
            if not self._closed:
                self._pos += size
                self._release()

    def _more_time(self, deadline: float | None, consumed: int) -> None:
        """After a fragment that did not end a message: a peer that never stops sending
        fragments (empty ones, say) must not keep a timed call past its deadline, nor one
        that does not wait past a ring's worth (``consumed``: see _charge). The state is
        kept: the next call goes on."""
        if deadline is None:
            return
        if consumed >= self.capacity if deadline == 0.0 else _monotonic() >= deadline:
            raise self._timeout_error()

    def _charge(self, size: int) -> int:
        """A fragment counts as at least 1/64 of the ring (a real one is a quarter ring: only
        a hostile peer's are counted up)."""
        return max(size, self.capacity // 64)

    def _get_message(self, deadline: float | None) -> bytes:
        data = self._data
        consumed = 0
        while True:
            at, n, kind, aux, size = self._wait_record(deadline)
            if self._discarding:
                if kind not in (L.MIDDLE, L.LAST):
                    raise self._fail("a skipped long message did not end with a last fragment")
                self._pos += size
                self._discarding = kind != L.LAST
                self._release()
                consumed += self._charge(size)
                self._more_time(deadline, consumed)
                continue
            partial = self._partial
            if partial is None:
                if kind == L.MSG:
                    self._pos += size
                    if n > self.max_message:
                        raise self._too_large(n, self.max_message)
                    return bytes(data[at : at + n])
                if kind != L.FIRST:
                    raise self._fail("a continuation fragment arrived without a first fragment")
                if aux > self.max_message:
                    self._discarding = True
                    self._pos += size
                    raise self._too_large(aux, self.max_message)
                if n > aux:
                    raise self._fail("a first fragment is longer than its whole message")
                partial = self._partial = bytearray()
                self._partial_total = aux
            elif kind not in (L.MIDDLE, L.LAST):
                raise self._fail("a new message started before the previous one was complete")
            if n > self._partial_total - len(partial):
                raise self._fail("fragments add up to more than the announced length")
            partial += data[at : at + n]
            self._pos += size
            if kind == L.LAST:
                if len(partial) != self._partial_total:
                    raise self._fail("the last fragment came before the announced length")
                self._partial = None
                return bytes(partial)
            self._release()
            consumed += self._charge(size)
            self._more_time(deadline, consumed)

    def _consumer_ready(self, deadline: float | None, timeout: float | None) -> None:
        self._enter(False, deadline, timeout)
        self._end_view()

    @closed_wins
    def recv(self, timeout: float | None = None) -> bytes:
        deadline = self._deadline(timeout)
        self._consumer_ready(deadline, timeout)
        try:
            out = self._get_message(deadline)
            self.messages += 1
            self.nbytes += len(out)
            return out
        finally:
            if not self._corrupt:
                self._release()
            self._leave()

    @closed_wins
    def recv_many(self, max_messages: int | None = 0, timeout: float | None = None) -> list[bytes]:
        deadline = self._deadline(timeout)
        self._consumer_ready(deadline, timeout)
        try:
            out = [self._get_message(deadline)]
            nbytes = len(out[0])
            batch = self.capacity // 8
            limit = max_messages or 0
            data = self._data
            start = self._pos  # at most a ring's worth more: a peer cannot keep this going
            while (limit <= 0 or len(out) < limit) and self._pos - start < self.capacity:
                try:
                    rec = self._next()
                except (EndOfChannel, ChannelBroken, RemoteProtocolError):
                    break  # reported by the next call
                if rec is None or rec[2] != L.MSG or rec[1] > self.max_message:
                    break
                at, n, _, _, size = rec
                out.append(bytes(data[at : at + n]))
                nbytes += n
                self._pos += size
                if self._pos - self._pub >= batch:
                    self._release()
                if not len(out) & 1023 and deadline and _monotonic() >= deadline:
                    break  # (a ring's worth of empty messages can take a while)
            self.messages += len(out)
            self.nbytes += nbytes
            return out
        finally:
            if not self._corrupt:
                self._release()
            self._leave()

    @closed_wins
    def view(self, timeout: float | None = None) -> memoryview:
        deadline = self._deadline(timeout)
        self._consumer_ready(deadline, timeout)
        try:
            at, n, kind, _, size = self._wait_record(deadline)
            if kind == L.MSG and self._partial is None and not self._discarding:
                if n > self.max_message:
                    self._pos += size
                    self._release()
                    raise self._too_large(n, self.max_message)
                v = self._data[at : at + n].toreadonly()
                self._view = (size, v)
                self.messages += 1
                self.nbytes += n
                return v
            out = self._get_message(deadline)  # a long message: reassembled, so a copy
            self._release()
            self.messages += 1
            self.nbytes += len(out)
            return memoryview(out)
        finally:
            self._leave()

    def release_view(self) -> None:
        if self._closed or self.producer or self._view is None:
            return
        self._enter(False)
        try:
            self._end_view()
        finally:
            self._leave()

    # -- both --------------------------------------------------------------------------------
    def arm(self, size: int | None = 0) -> bool:
        if self._closed:
            raise self._closed_error()
        if self.producer:
            need = self._need(max(size or 0, 0))
            self._publish()
            self._u64[L.PRODUCER_NEED] = need
            flag = L.PRODUCER_WAITING
        else:
            if self._view is None:
                self._release()
            need = 0
            flag = L.CONSUMER_WAITING
        self._u32[flag] = 1
        _fence()
        if self._ready(need):
            self._u32[flag] = 0
            return True
        return False

    def disarm(self) -> None:
        if not self._closed:
            self._u32[L.PRODUCER_WAITING if self.producer else L.CONSUMER_WAITING] = 0

    def close(self) -> None:
        self._close(mark=True)

    def abandon(self) -> None:
        """Close this end without marking it closed: the peer sees it go away (once every
        copy of its fds is closed), after whatever was published."""
        self._close(mark=False)

    def _close(self, *, mark: bool) -> None:
        with self._state:  # a call leaving at the same moment must not free the fds under us
            if self._closed:
                return
            if self.producer and not self._in_use and not self._corrupt:
                self._publish()
            self._closed = True
            if self._loan is not None:
                release(self._loan[2])
                self._loan = None
            if self._view is not None:
                release(self._view[1])
                self._view = None
            if mark:
                self._u32[L.PRODUCER_CLOSED if self.producer else L.CONSUMER_CLOSED] = 1
            _fence()
            self._w.signal()  # the peer, parked on either side
            self._w.signal_self()  # a thread of ours parked in this ring
            self._partial = None
            if not self._in_use:
                self._free()
