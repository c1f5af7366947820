/* ipcwire Ring (see ringobject.h): the producer end. */
#include "ringobject.h"

#include <string.h>
#include <time.h>

static int check_alive(RingObject *self)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (now < self->alive_at)
        return IPCW_OK;
    self->alive_at = now + ALIVE_EVERY_NS;
    return ipcw_peer_alive(self->w.alive_fd) ? IPCW_OK : IPCW_PEER_GONE;
}

static int reserve(RingObject *self, uint64_t n, int64_t deadline, unsigned char **dst)
{
    for (;;) {
        int st = ipcw_reserve(&self->ring, n, dst);
        if (st <= IPCW_OK)
            return st;
        rg_publish(self); /* the consumer must see everything (pads too) before we sleep */
        st = rg_wait(self, ipcw_need(&self->ring, n), deadline);
        if (st != IPCW_OK)
            return st;
    }
}

static int put_record(RingObject *self, const unsigned char *src, uint64_t n, uint32_t kind,
                      uint64_t aux, int64_t deadline)
{
    unsigned char *dst;
    int st = reserve(self, n, deadline, &dst);
    if (st != IPCW_OK)
        return st;
    rg_copy(dst, src, n);
    if (self->closed) /* closed by another thread during a long copy */
        return IPCW_INTERRUPTED;
    ipcw_finish(&self->ring, n, kind, aux);
    return IPCW_OK;
}

/* Fragments of the message from *off on (all of it when it fits in one record), each
 * published at once so the consumer copies one out while the next is copied in. *off is
 * where the next fragment starts (n when done). */
static int put_message(RingObject *self, const unsigned char *src, uint64_t n, uint64_t *off,
                       int64_t deadline)
{
    uint64_t frag = ipcw_fragment(&self->ring);
    if (n <= frag) {
        int st = put_record(self, src, n, IPCW_MSG, 0, deadline);
        if (st == IPCW_OK)
            *off = n;
        return st;
    }
    while (*off < n) {
        uint64_t at = *off, chunk = n - at < frag ? n - at : frag;
        uint32_t kind = at == 0 ? IPCW_FIRST : at + chunk == n ? IPCW_LAST : IPCW_MIDDLE;
        int st = put_record(self, src + at, chunk, kind, at == 0 ? n : 0, deadline);
        if (st != IPCW_OK)
            return st;
        *off = at + chunk;
        rg_publish(self);
    }
    return IPCW_OK;
}

/* A bytes object is used in place (the common case, without the buffer protocol's cost);
 * anything else through a simple buffer export, released by release_bytes(). */
static int get_bytes(RingObject *self, PyObject *obj, Py_buffer *buf)
{
    if (PyBytes_CheckExact(obj)) {
        buf->obj = NULL;
        buf->buf = PyBytes_AS_STRING(obj);
        buf->len = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, buf, PyBUF_SIMPLE) == 0)
        return 0;
    if (PyObject_CheckBuffer(obj)) {
        /* not contiguous (a strided memoryview: BufferError; a numpy array: ValueError):
         * send a contiguous copy of its bytes */
        PyErr_Clear();
        PyObject *copy = PyBytes_FromObject(obj);
        if (copy == NULL)
            return -1;
        int rc = PyObject_GetBuffer(copy, buf, PyBUF_SIMPLE); /* buf holds the reference */
        Py_DECREF(copy);
        return rc;
    }
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        rg_raise(ipcw_LocalProtocolError, self, NULL,
                 "the bytes codec sends bytes-like objects, not %s; encode it first or open "
                 "the channel with codec='json' or 'msgpack'",
                 Py_TYPE(obj)->tp_name);
    }
    return -1;
}

static inline void release_bytes(Py_buffer *buf)
{
    if (buf->obj != NULL)
        PyBuffer_Release(buf);
}

static int check_size(RingObject *self, uint64_t n)
{
    if (n <= self->max_send)
        return 0;
    rg_raise_too_large(self, n, self->max_send,
                       "%U: a message of %llu bytes was not sent: over the peer's limit of "
                       "%llu bytes (its max_frame); raise max_frame= on both sides, or split "
                       "the message");
    return -1;
}

static int producer_ready(RingObject *self, int64_t deadline)
{
    if (rg_enter(self, 1, deadline) < 0)
        return -1;
    if (self->loan_active) {
        rg_leave(self);
        rg_raise(ipcw_LocalProtocolError, self, NULL,
                 "a loan on %U is outstanding (loan() was not followed by send_loan() or "
                 "abort_loan(), perhaps because filling it raised): call send_loan() or "
                 "abort_loan() first, or fill loans in 'with ch.loaned(n) as buf:', which "
                 "gives the loan back when its body raises",
                 self->name);
        return -1;
    }
    if (self->send_broken) {
        rg_leave(self);
        rg_raise(ipcw_ChannelBroken, self, NULL,
                 "an earlier send to %U stopped part-way through a message; the ring is out "
                 "of step, so open a new channel",
                 self->name);
        return -1;
    }
    return 0;
}

PyObject *Ring_send(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    Py_buffer buf;
    uint64_t off = 0;
    if (rg_parse(args, nargs, kwnames, names, 2, 1, a, "send") < 0 ||
        rg_deadline(self, a[1], &deadline) < 0 || get_bytes(self, a[0], &buf) < 0)
        return NULL;
    if (check_size(self, (uint64_t)buf.len) < 0 || producer_ready(self, deadline) < 0) {
        release_bytes(&buf);
        return NULL;
    }
    int st = check_alive(self);
    if (st == IPCW_OK)
        st = put_message(self, buf.buf, (uint64_t)buf.len, &off, deadline);
    if (st == IPCW_OK) {
        rg_publish(self);
        self->messages++;
        self->nbytes += (unsigned long long)buf.len;
    } else if (off > 0) {
        self->send_broken = 1;
    }
    release_bytes(&buf);
    rg_leave(self);
    if (st != IPCW_OK)
        return rg_fail(self, st, off > 0);
    Py_RETURN_NONE;
}

/* send_some(data, offset=0) -> int: write what fits now, without waiting, from `offset` on
 * (for event loops). Returns the offset reached: len(data) when the message is complete, -1
 * when nothing could be written at offset 0. */
PyObject *Ring_send_some(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"data", "offset"};
    PyObject *a[2];
    Py_buffer buf;
    Py_ssize_t start = 0;
    if (rg_parse(args, nargs, kwnames, names, 2, 1, a, "send_some") < 0)
        return NULL;
    if (a[1] != NULL) {
        start = PyNumber_AsSsize_t(a[1], PyExc_OverflowError);
        if (start == -1 && PyErr_Occurred())
            return NULL;
    }
    if (get_bytes(self, a[0], &buf) < 0)
        return NULL;
    if (start < 0 || start > buf.len || (start > 0 && start == buf.len) ||
        (start > 0 && (uint64_t)buf.len <= ipcw_fragment(&self->ring))) {
        release_bytes(&buf);
        PyErr_SetString(PyExc_ValueError, "send_some(): offset outside the message");
        return NULL;
    }
    if (check_size(self, (uint64_t)buf.len) < 0 || producer_ready(self, NONBLOCK) < 0) {
        release_bytes(&buf);
        return NULL;
    }
    uint64_t off = (uint64_t)start;
    int st = start == 0 ? check_alive(self) : IPCW_OK;
    if (st == IPCW_OK)
        st = put_message(self, buf.buf, (uint64_t)buf.len, &off, NONBLOCK);
    if (st == IPCW_OK) {
        rg_publish(self);
        self->messages++;
        self->nbytes += (unsigned long long)buf.len;
    }
    release_bytes(&buf);
    rg_leave(self);
    if (st == IPCW_TIMEOUT) /* full: report the progress */
        return PyLong_FromLongLong(start == 0 && off == 0 ? -1 : (long long)off);
    if (st != IPCW_OK)
        return rg_fail(self, st, off > 0);
    return PyLong_FromUnsignedLongLong(off);
}

PyObject *Ring_send_many(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"items", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    uint64_t off = 0;
    int st = IPCW_OK;
    if (rg_parse(args, nargs, kwnames, names, 2, 1, a, "send_many") < 0 ||
        rg_deadline(self, a[1], &deadline) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "send_many() takes a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) { /* refuse before anything is written */
        Py_buffer buf;
        if (get_bytes(self, items[i], &buf) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        int too_large = check_size(self, (uint64_t)buf.len) < 0;
        release_bytes(&buf);
        if (too_large) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    if (producer_ready(self, deadline) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    uint64_t batch = self->ring.cap / 8;
    Py_ssize_t done = 0; /* whole messages written */
    st = check_alive(self);
    for (Py_ssize_t i = 0; i < n && st == IPCW_OK; i++) {
        Py_buffer buf;
        if (get_bytes(self, items[i], &buf) < 0) {
            st = ERR_PYTHON;
            break;
        }
        off = 0;
        st = put_message(self, buf.buf, (uint64_t)buf.len, &off, deadline);
        if (st == IPCW_OK) {
            done++;
            self->messages++;
            self->nbytes += (unsigned long long)buf.len;
            if (self->ring.pos - self->ring.pub >= batch)
                rg_publish(self);
        }
        release_bytes(&buf);
    }
    if (!self->closed)
        rg_publish(self); /* whole messages written before a failure are delivered */
    int partial = st != IPCW_OK && off > 0;
    if (partial)
        self->send_broken = 1;
    Py_DECREF(seq);
    rg_leave(self);
    if (st == IPCW_TIMEOUT && !partial && done > 0 && !self->closed) {
        /* those before it are delivered: say so, or a caller retrying the batch duplicates */
        rg_raise(ipcw_Timeout, self, NULL,
                 "send_many to %U timed out after %zd of its %zd messages: the ring is full "
                 "and the peer is not reading; those %zd were sent, the rest were not",
                 self->name, done, n, done);
        return NULL;
    }
    if (st != IPCW_OK)
        return rg_fail(self, st, partial);
    Py_RETURN_NONE;
}

PyObject *Ring_loan(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    static const char *const names[] = {"size", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    unsigned char *dst;
    if (rg_parse(args, nargs, kwnames, names, 2, 1, a, "loan") < 0 ||
        rg_deadline(self, a[1], &deadline) < 0)
        return NULL;
    Py_ssize_t n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "loan size must not be negative");
        return NULL;
    }
    if (check_size(self, (uint64_t)n) < 0 || producer_ready(self, deadline) < 0)
        return NULL;
    uint64_t limit = ipcw_max_record(&self->ring);
    if ((uint64_t)n > limit) {
        rg_leave(self);
        rg_raise_too_large(self, (uint64_t)n, limit,
                           "%U: a loan of %llu bytes is over the limit of %llu (the ring's "
                           "capacity less 16); connect with a larger capacity=, or use send(), "
                           "which splits long messages");
        return NULL;
    }
    int st = check_alive(self);
    if (st == IPCW_OK)
        st = reserve(self, (uint64_t)n, deadline, &dst);
    if (st != IPCW_OK) {
        rg_leave(self);
        return rg_fail(self, st, 0);
    }
    self->loan_active = 1;
    self->loan_ptr = dst;
    self->loan_size = (uint64_t)n;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)self);
    if (mv == NULL)
        self->loan_active = 0;
    else
        self->handed = Py_NewRef(mv);
    rg_leave(self);
    return mv;
}

PyObject *Ring_commit(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    static const char *const names[] = {"size"};
    PyObject *a[1];
    if (rg_parse(args, nargs, kwnames, names, 1, 0, a, "commit") < 0 ||
        rg_enter(self, 1, FOREVER) < 0)
        return NULL;
    if (!self->loan_active) {
        rg_leave(self);
        rg_raise(ipcw_LocalProtocolError, self, NULL,
                 "nothing is loaned on %U: call loan(n) first", self->name);
        return NULL;
    }
    uint64_t size = self->loan_size;
    if (a[0] != NULL && a[0] != Py_None) {
        Py_ssize_t n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if ((n == -1 && PyErr_Occurred()) || n < 0 || (uint64_t)n > self->loan_size) {
            rg_leave(self);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "commit(%zd): the loan is %llu bytes", n,
                             (unsigned long long)self->loan_size);
            return NULL;
        }
        size = (uint64_t)n;
    }
    rg_drop_handed(self);
    self->loan_active = 0;
    ipcw_finish(&self->ring, size, IPCW_MSG, 0);
    rg_publish(self);
    self->messages++;
    self->nbytes += size;
    rg_leave(self);
    Py_RETURN_NONE;
}

PyObject *Ring_abort(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (self->closed || !self->loan_active)
        Py_RETURN_NONE;
    if (rg_enter(self, 1, FOREVER) < 0)
        return NULL;
    rg_drop_handed(self);
    self->loan_active = 0;
    rg_leave(self);
    Py_RETURN_NONE;
}
