/* ipcwire._ext._native.Ring: one end (producer or consumer) of a shared-memory ring.
 *
 * The Python face of ring.c: copying send/recv (long messages split into fragments and
 * reassembled), batches, zero-copy loans and views, blocking waits that release the GIL, and
 * the mapping of ring status codes to ipcwire.errors. The policy (which fds, which wait
 * policy, naming, handshakes) lives in Python, in ipcwire.shm.
 *
 * Lifetime: the Ring holds a buffer export of the mapping (so the mapping cannot be unmapped
 * under it) and its own duplicates of the eventfds and the liveness socket. close() marks this
 * end closed in shared memory, wakes the peer and any local waiter, and releases the fds and
 * the mapping as soon as no thread is inside a call and no memoryview of a loan or view is
 * alive; until then they are kept, so no pointer ever dangles.
 */
#include "native.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FOREVER (-1)
#define NONBLOCK (-2)
#define ERR_PYTHON (-100)
#define ERR_TOO_LARGE (-101)
#define BIG_COPY (128 * 1024)        /* copies at least this long run without the GIL */
#define ALIVE_EVERY_NS 5000000       /* senders ask the kernel whether the peer lives, each 5 ms */
#define DEFAULT_MAX_MESSAGE (64u * 1024 * 1024)

typedef struct {
    PyObject_HEAD
    ipcw_ring ring;
    ipcw_waiter w;
    _Atomic int interrupt;
    Py_buffer mem;
    int has_mem;
    int producer;
    int in_use;
    int closed;
    int send_broken;
    Py_ssize_t exports;
    /* zero copy */
    int loan_active;
    unsigned char *loan_ptr;
    uint64_t loan_size;
    int view_active;
    ipcw_rec view_rec;
    PyObject *handed; /* the memoryview handed out for the current loan or view */
    /* reassembly of long messages (consumer) */
    PyObject *partial;
    uint64_t partial_total;
    uint64_t partial_filled;
    int discarding;
    uint64_t too_large;
    /* settings and counters */
    uint64_t max_message;
    PyObject *name;
    unsigned long long messages;
    unsigned long long nbytes;
    int64_t alive_at;
} RingObject;

/* PyErr_GetRaisedException() and friends are 3.12+; these work on 3.11 too. */
static PyObject *take_error(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void restore_error(PyObject *exc)
{
    if (exc == NULL)
        return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void raise_with(PyObject *cls, RingObject *self, PyObject *extra, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg == NULL)
        return;
    PyObject *args = PyTuple_Pack(1, msg);
    PyObject *kw = extra ? extra : PyDict_New();
    Py_DECREF(msg);
    if (args == NULL || kw == NULL) {
        Py_XDECREF(args);
        Py_XDECREF(kw);
        return;
    }
    if (PyDict_SetItemString(kw, "endpoint", self->name) == 0) {
        PyObject *exc = PyObject_Call(cls, args, kw);
        if (exc != NULL) {
            PyErr_SetObject(cls, exc);
            Py_DECREF(exc);
        }
    }
    Py_DECREF(args);
    Py_DECREF(kw);
}

static void raise_too_large(RingObject *self, uint64_t size, uint64_t limit, const char *fmt)
{
    PyObject *kw = Py_BuildValue("{s:K,s:K}", "size", (unsigned long long)size, "limit",
                                 (unsigned long long)limit);
    if (kw != NULL)
        raise_with(ipcw_FrameTooLarge, self, kw, fmt, self->name, (unsigned long long)size,
                   (unsigned long long)limit);
}

static PyObject *fail_status(RingObject *self, int st, int partial)
{
    switch (st) {
    case ERR_PYTHON:
        break;
    case IPCW_CORRUPT:
        raise_with(ipcw_RemoteProtocolError, self, NULL,
                   "%U: the shared-memory ring is corrupt (%s); the peer is buggy or hostile, "
                   "or something else wrote into the segment. Close the channel and reconnect",
                   self->name, self->ring.why ? self->ring.why : "?");
        break;
    case IPCW_TIMEOUT:
        if (self->producer && partial)
            raise_with(ipcw_Timeout, self, NULL,
                       "send to %U timed out part-way through a long message (the peer is not "
                       "reading); the channel cannot be used for sending any more",
                       self->name);
        else if (self->producer)
            raise_with(ipcw_Timeout, self, NULL,
                       "send to %U timed out: the ring is full and the peer is not reading; "
                       "nothing was sent",
                       self->name);
        else
            raise_with(ipcw_Timeout, self, NULL, "no message from %U within the timeout",
                       self->name);
        break;
    case IPCW_PEER_GONE:
        raise_with(ipcw_ChannelBroken, self, NULL,
                   "the peer of %U went away without closing the channel (its process exited "
                   "or was killed)%s",
                   self->name,
                   self->partial ? "; a partly received message was discarded" : "");
        break;
    case IPCW_INTERRUPTED:
        raise_with(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
        break;
    case IPCW_PEER_CLOSED:
        if (self->producer)
            raise_with(ipcw_ChannelBroken, self, NULL,
                       "the peer closed %U, so nothing more can be sent", self->name);
        else if (self->partial != NULL || self->discarding)
            raise_with(ipcw_ChannelBroken, self, NULL,
                       "%U closed in the middle of a message; the partial message was "
                       "discarded",
                       self->name);
        else
            raise_with(ipcw_EndOfChannel, self, NULL, "%U: the peer closed its end",
                       self->name);
        break;
    case IPCW_SYSERR: {
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *cause = take_error();
        raise_with(ipcw_ChannelBroken, self, NULL, "%U broke: %S", self->name, cause);
        PyObject *exc = take_error();
        if (exc != NULL) {
            PyException_SetCause(exc, cause); /* steals cause */
            restore_error(exc);
        } else {
            Py_XDECREF(cause);
        }
        break;
    }
    case ERR_TOO_LARGE:
        raise_too_large(self, self->too_large, self->max_message,
                        "%U: a message of %llu bytes arrived, over max_frame=%llu; it was "
                        "skipped. Raise max_frame= on this side");
        break;
    default:
        PyErr_Format(PyExc_SystemError, "ipcwire ring: unexpected status %d", st);
    }
    return NULL;
}

static int corrupt(RingObject *self, const char *why)
{
    self->ring.corrupt = 1;
    self->ring.why = why;
    return IPCW_CORRUPT;
}

/* ---- argument helpers ---------------------------------------------------------------------- */

static int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                      const char *const *names, Py_ssize_t nnames, Py_ssize_t nrequired,
                      PyObject **out, const char *fname)
{
    if (nargs > nnames) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments", fname, nnames);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nnames; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t j = 0;
        while (j < nnames && PyUnicode_CompareWithASCIIString(key, names[j]) != 0)
            j++;
        if (j == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", fname,
                         key);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for %s", fname, names[j]);
            return -1;
        }
        out[j] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < nrequired; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing argument %s", fname, names[i]);
            return -1;
        }
    return 0;
}

static int get_deadline(PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = FOREVER;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t <= 0) {
        *deadline = NONBLOCK;
        return 0;
    }
    if (t > 1e9)
        t = 1e9;
    *deadline = ipcw_now_ns() + (int64_t)(t * 1e9);
    return 0;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Release fds and the mapping once nothing uses them any more. */
static void maybe_free(RingObject *self)
{
    if (!self->closed || self->in_use)
        return;
    close_fd(&self->w.wait_fd);
    close_fd(&self->w.wake_fd);
    close_fd(&self->w.alive_fd);
    if (self->exports == 0 && self->has_mem) {
        self->has_mem = 0;
        self->ring.hdr = NULL;
        PyBuffer_Release(&self->mem);
    }
}

/* Invalidate the memoryview handed out for a loan or view (if nothing derived from it still
 * holds it; otherwise the mapping simply stays alive until that goes away). */
static void drop_handed(RingObject *self)
{
    PyObject *mv = self->handed;
    if (mv == NULL)
        return;
    self->handed = NULL;
    PyObject *saved = take_error();
    PyObject *r = PyObject_CallMethod(mv, "release", NULL);
    if (r == NULL)
        PyErr_Clear();
    else
        Py_DECREF(r);
    Py_DECREF(mv);
    restore_error(saved);
}

static int enter(RingObject *self, int producer)
{
    if (self->closed) {
        raise_with(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
        return -1;
    }
    if (self->producer != producer) {
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "this end of the ring of %U can only %s", self->name,
                   self->producer ? "send" : "receive");
        return -1;
    }
    if (self->in_use) {
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "one end of the ring of %U was used from two threads at once; serialise "
                   "the calls (the channel does that for you)",
                   self->name);
        return -1;
    }
    self->in_use = 1;
    return 0;
}

static void leave(RingObject *self)
{
    self->in_use = 0;
    maybe_free(self);
}

/* ---- waiting ------------------------------------------------------------------------------- */

static int wait_ring(RingObject *self, uint64_t need, int64_t deadline)
{
    if (deadline == NONBLOCK) {
        if (ipcw_peer_alive(self->w.alive_fd))
            return IPCW_TIMEOUT;
        /* gone: whatever it published before dying is still delivered */
        return ipcw_ready(&self->ring, self->producer, need) ? IPCW_OK : IPCW_PEER_GONE;
    }
    for (;;) {
        int st;
        Py_BEGIN_ALLOW_THREADS
        st = self->producer ? ipcw_wait_space(&self->ring, need, &self->w, deadline)
                            : ipcw_wait_data(&self->ring, &self->w, deadline);
        Py_END_ALLOW_THREADS
        if (st != IPCW_AGAIN)
            return st;
        if (PyErr_CheckSignals() < 0)
            return ERR_PYTHON;
        if (deadline >= 0 && ipcw_now_ns() >= deadline)
            return IPCW_TIMEOUT;
    }
}

static inline void do_publish(RingObject *self)
{
    if (ipcw_publish(&self->ring))
        ipcw_signal(self->w.wake_fd);
}

static inline void do_release(RingObject *self)
{
    if (ipcw_release(&self->ring))
        ipcw_signal(self->w.wake_fd);
}

static void copy(unsigned char *dst, const unsigned char *src, uint64_t n)
{
    if (n >= BIG_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(dst, src, n);
    }
}

/* ---- producer ------------------------------------------------------------------------------ */

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
        do_publish(self); /* the consumer must see everything (pads too) before we sleep */
        st = wait_ring(self, ipcw_need(&self->ring, n), deadline);
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
    copy(dst, src, n);
    if (self->closed) /* closed by another thread during a long copy */
        return IPCW_INTERRUPTED;
    ipcw_finish(&self->ring, n, kind, aux);
    return IPCW_OK;
}

/* One message: one record, or fragments of a quarter ring each, each published at once so
 * the consumer copies one out while the next is copied in. */
static int put_message(RingObject *self, const unsigned char *src, uint64_t n, int64_t deadline,
                       int *started)
{
    uint64_t frag = ipcw_fragment(&self->ring);
    if (n <= frag)
        return put_record(self, src, n, IPCW_MSG, 0, deadline);
    for (uint64_t off = 0; off < n;) {
        uint64_t chunk = n - off < frag ? n - off : frag;
        uint32_t kind = off == 0 ? IPCW_FIRST : off + chunk == n ? IPCW_LAST : IPCW_MIDDLE;
        int st = put_record(self, src + off, chunk, kind, off == 0 ? n : 0, deadline);
        if (st != IPCW_OK) {
            *started = off > 0;
            return st;
        }
        off += chunk;
        do_publish(self);
    }
    return IPCW_OK;
}

static int producer_ready(RingObject *self)
{
    if (enter(self, 1) < 0)
        return -1;
    if (self->loan_active) {
        leave(self);
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "a loan on %U is outstanding: commit or abort it first", self->name);
        return -1;
    }
    if (self->send_broken) {
        leave(self);
        raise_with(ipcw_ChannelBroken, self, NULL,
                   "an earlier send to %U stopped part-way through a message; the ring is out "
                   "of step, so open a new channel",
                   self->name);
        return -1;
    }
    return 0;
}

static PyObject *Ring_send(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    Py_buffer buf;
    int started = 0;
    if (parse_args(args, nargs, kwnames, names, 2, 1, a, "send") < 0 ||
        get_deadline(a[1], &deadline) < 0)
        return NULL;
    if (PyObject_GetBuffer(a[0], &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    if (producer_ready(self) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    int st = check_alive(self);
    if (st == IPCW_OK)
        st = put_message(self, buf.buf, (uint64_t)buf.len, deadline, &started);
    if (st == IPCW_OK) {
        do_publish(self);
        self->messages++;
        self->nbytes += (unsigned long long)buf.len;
    } else if (started) {
        self->send_broken = 1;
    }
    PyBuffer_Release(&buf);
    leave(self);
    if (st != IPCW_OK)
        return fail_status(self, st, started);
    Py_RETURN_NONE;
}

static PyObject *Ring_send_many(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"items", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    int started = 0, st = IPCW_OK;
    if (parse_args(args, nargs, kwnames, names, 2, 1, a, "send_many") < 0 ||
        get_deadline(a[1], &deadline) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "send_many() takes a sequence of bytes-like objects");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyObject_CheckBuffer(items[i])) {
            PyErr_Format(PyExc_TypeError, "send_many(): item %zd is a %.100s, not bytes-like",
                         i, Py_TYPE(items[i])->tp_name);
            Py_DECREF(seq);
            return NULL;
        }
    if (producer_ready(self) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    uint64_t batch = self->ring.cap / 8;
    st = check_alive(self);
    for (Py_ssize_t i = 0; i < n && st == IPCW_OK; i++) {
        Py_buffer buf;
        if (PyObject_GetBuffer(items[i], &buf, PyBUF_SIMPLE) < 0) {
            st = ERR_PYTHON;
            break;
        }
        st = put_message(self, buf.buf, (uint64_t)buf.len, deadline, &started);
        if (st == IPCW_OK) {
            self->messages++;
            self->nbytes += (unsigned long long)buf.len;
            if (self->ring.pos - self->ring.pub >= batch)
                do_publish(self);
        }
        PyBuffer_Release(&buf);
    }
    if (!self->closed)
        do_publish(self); /* whole messages written before a failure are delivered */
    if (started)
        self->send_broken = 1;
    Py_DECREF(seq);
    leave(self);
    if (st != IPCW_OK)
        return fail_status(self, st, started);
    Py_RETURN_NONE;
}

static PyObject *Ring_loan(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"size", "timeout"};
    PyObject *a[2];
    int64_t deadline;
    unsigned char *dst;
    if (parse_args(args, nargs, kwnames, names, 2, 1, a, "loan") < 0 ||
        get_deadline(a[1], &deadline) < 0)
        return NULL;
    Py_ssize_t n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "loan size must not be negative");
        return NULL;
    }
    if (producer_ready(self) < 0)
        return NULL;
    uint64_t limit = ipcw_max_record(&self->ring);
    if ((uint64_t)n > limit) {
        leave(self);
        raise_too_large(self, (uint64_t)n, limit,
                        "%U: a loan of %llu bytes is over the limit of %llu (half the ring); "
                        "connect with a larger capacity=, or use send(), which splits long "
                        "messages");
        return NULL;
    }
    int st = check_alive(self);
    if (st == IPCW_OK)
        st = reserve(self, (uint64_t)n, deadline, &dst);
    if (st != IPCW_OK) {
        leave(self);
        return fail_status(self, st, 0);
    }
    self->loan_active = 1;
    self->loan_ptr = dst;
    self->loan_size = (uint64_t)n;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)self);
    if (mv == NULL)
        self->loan_active = 0;
    else
        self->handed = Py_NewRef(mv);
    leave(self);
    return mv;
}

static PyObject *Ring_commit(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"size"};
    PyObject *a[1];
    if (parse_args(args, nargs, kwnames, names, 1, 0, a, "commit") < 0)
        return NULL;
    if (enter(self, 1) < 0)
        return NULL;
    if (!self->loan_active) {
        leave(self);
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "nothing is loaned on %U: call loan(n) first", self->name);
        return NULL;
    }
    uint64_t size = self->loan_size;
    if (a[0] != NULL && a[0] != Py_None) {
        Py_ssize_t n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if ((n == -1 && PyErr_Occurred()) || n < 0 || (uint64_t)n > self->loan_size) {
            leave(self);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "commit(%zd): the loan is %llu bytes", n,
                             (unsigned long long)self->loan_size);
            return NULL;
        }
        size = (uint64_t)n;
    }
    drop_handed(self);
    self->loan_active = 0;
    ipcw_finish(&self->ring, size, IPCW_MSG, 0);
    do_publish(self);
    self->messages++;
    self->nbytes += size;
    leave(self);
    Py_RETURN_NONE;
}

static PyObject *Ring_abort(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (self->in_use) {
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "abort() on %U while another thread sends", self->name);
        return NULL;
    }
    drop_handed(self);
    self->loan_active = 0;
    Py_RETURN_NONE;
}

/* ---- consumer ------------------------------------------------------------------------------ */

static int next_record(RingObject *self, ipcw_rec *rec)
{
    int st = ipcw_peek(&self->ring, rec);
    if (st != IPCW_AGAIN)
        return st;
    if (atomic_load_explicit(&self->ring.hdr->producer_closed, memory_order_acquire)) {
        st = ipcw_peek(&self->ring, rec); /* tail was stored before the flag */
        return st == IPCW_AGAIN ? IPCW_PEER_CLOSED : st;
    }
    return IPCW_AGAIN;
}

static int wait_record(RingObject *self, ipcw_rec *rec, int64_t deadline)
{
    for (;;) {
        int st = next_record(self, rec);
        if (st != IPCW_AGAIN)
            return st;
        do_release(self); /* skipped pads: give the space back before sleeping */
        st = wait_ring(self, 0, deadline);
        if (st != IPCW_OK)
            return st;
    }
}

static void end_view(RingObject *self)
{
    if (!self->view_active)
        return;
    drop_handed(self);
    self->view_active = 0;
    if (self->ring.hdr != NULL) {
        ipcw_consume(&self->ring, &self->view_rec);
        do_release(self);
    }
}

/* The next whole message as bytes (fragments reassembled). */
static int get_message(RingObject *self, int64_t deadline, PyObject **out)
{
    ipcw_rec rec;
    for (;;) {
        int st = wait_record(self, &rec, deadline);
        if (st != IPCW_OK)
            return st;
        if (self->discarding) {
            if (rec.kind != IPCW_MIDDLE && rec.kind != IPCW_LAST)
                return corrupt(self, "a skipped long message did not end with a last fragment");
            ipcw_consume(&self->ring, &rec);
            self->discarding = rec.kind != IPCW_LAST;
            do_release(self);
            continue;
        }
        if (self->partial == NULL) {
            if (rec.kind == IPCW_MSG) {
                if (rec.len > self->max_message) {
                    self->too_large = rec.len;
                    ipcw_consume(&self->ring, &rec);
                    return ERR_TOO_LARGE;
                }
                PyObject *b = PyBytes_FromStringAndSize(NULL, rec.len);
                if (b == NULL)
                    return ERR_PYTHON;
                copy((unsigned char *)PyBytes_AS_STRING(b), rec.payload, rec.len);
                ipcw_consume(&self->ring, &rec);
                *out = b;
                return IPCW_OK;
            }
            if (rec.kind != IPCW_FIRST)
                return corrupt(self, "a continuation fragment arrived without a first fragment");
            if (rec.aux > self->max_message || rec.aux > (uint64_t)PY_SSIZE_T_MAX) {
                self->too_large = rec.aux;
                self->discarding = 1;
                ipcw_consume(&self->ring, &rec);
                return ERR_TOO_LARGE;
            }
            if (rec.len > rec.aux)
                return corrupt(self, "a first fragment is longer than its whole message");
            self->partial = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rec.aux);
            if (self->partial == NULL)
                return ERR_PYTHON;
            self->partial_total = rec.aux;
            self->partial_filled = 0;
        } else if (rec.kind != IPCW_MIDDLE && rec.kind != IPCW_LAST) {
            return corrupt(self, "a new message started before the previous one was complete");
        }
        if (rec.len > self->partial_total - self->partial_filled)
            return corrupt(self, "fragments add up to more than the announced length");
        copy((unsigned char *)PyBytes_AS_STRING(self->partial) + self->partial_filled,
             rec.payload, rec.len);
        self->partial_filled += rec.len;
        ipcw_consume(&self->ring, &rec);
        if (rec.kind == IPCW_LAST) {
            if (self->partial_filled != self->partial_total)
                return corrupt(self, "the last fragment came before the announced length");
            *out = self->partial;
            self->partial = NULL;
            return IPCW_OK;
        }
        do_release(self);
    }
}

static int consumer_ready(RingObject *self)
{
    if (enter(self, 0) < 0)
        return -1;
    end_view(self);
    return 0;
}

static PyObject *Ring_recv(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1], *out = NULL;
    int64_t deadline;
    if (parse_args(args, nargs, kwnames, names, 1, 0, a, "recv") < 0 ||
        get_deadline(a[0], &deadline) < 0 || consumer_ready(self) < 0)
        return NULL;
    int st = get_message(self, deadline, &out);
    do_release(self);
    if (st == IPCW_OK) {
        self->messages++;
        self->nbytes += (unsigned long long)PyBytes_GET_SIZE(out);
    }
    leave(self);
    if (st != IPCW_OK)
        return fail_status(self, st, 0);
    return out;
}

static PyObject *Ring_recv_many(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"max_messages", "timeout"};
    PyObject *a[2], *first = NULL;
    int64_t deadline;
    Py_ssize_t max = 0;
    if (parse_args(args, nargs, kwnames, names, 2, 0, a, "recv_many") < 0 ||
        get_deadline(a[1], &deadline) < 0)
        return NULL;
    if (a[0] != NULL && a[0] != Py_None) {
        max = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if (max == -1 && PyErr_Occurred())
            return NULL;
    }
    if (consumer_ready(self) < 0)
        return NULL;
    int st = get_message(self, deadline, &first);
    PyObject *list = st == IPCW_OK ? PyList_New(1) : NULL;
    if (list == NULL) {
        Py_XDECREF(first);
        do_release(self);
        leave(self);
        return st == IPCW_OK ? NULL : fail_status(self, st, 0);
    }
    PyList_SET_ITEM(list, 0, first);
    unsigned long long count = 1, nbytes = (unsigned long long)PyBytes_GET_SIZE(first);
    uint64_t batch = self->ring.cap / 8;
    ipcw_rec rec;
    while (max <= 0 || (Py_ssize_t)count < max) {
        /* only whole single-record messages already here; anything else is left for the
         * next call (which also reports errors and end of channel) */
        if (next_record(self, &rec) != IPCW_OK || rec.kind != IPCW_MSG ||
            rec.len > self->max_message)
            break;
        PyObject *b = PyBytes_FromStringAndSize(NULL, rec.len);
        if (b == NULL || PyList_Append(list, b) < 0) {
            Py_XDECREF(b);
            PyErr_Clear(); /* out of memory: deliver what we have; the record stays */
            break;
        }
        copy((unsigned char *)PyBytes_AS_STRING(b), rec.payload, rec.len);
        Py_DECREF(b);
        ipcw_consume(&self->ring, &rec);
        count++;
        nbytes += rec.len;
        if (self->ring.pos - self->ring.pub >= batch)
            do_release(self);
    }
    do_release(self);
    self->messages += count;
    self->nbytes += nbytes;
    leave(self);
    return list;
}

static PyObject *Ring_view(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1], *out = NULL;
    int64_t deadline;
    ipcw_rec rec;
    if (parse_args(args, nargs, kwnames, names, 1, 0, a, "view") < 0 ||
        get_deadline(a[0], &deadline) < 0 || consumer_ready(self) < 0)
        return NULL;
    int st = wait_record(self, &rec, deadline);
    if (st == IPCW_OK && rec.kind == IPCW_MSG && self->partial == NULL && !self->discarding) {
        if (rec.len > self->max_message) {
            self->too_large = rec.len;
            ipcw_consume(&self->ring, &rec);
            do_release(self);
            leave(self);
            return fail_status(self, ERR_TOO_LARGE, 0);
        }
        self->view_active = 1;
        self->view_rec = rec;
        out = PyMemoryView_FromObject((PyObject *)self);
        if (out == NULL) {
            self->view_active = 0;
        } else {
            self->handed = Py_NewRef(out);
            self->messages++;
            self->nbytes += rec.len;
        }
        leave(self);
        return out;
    }
    if (st == IPCW_OK) { /* a long (fragmented) message: reassembled, so a copy */
        PyObject *b = NULL;
        st = get_message(self, deadline, &b);
        do_release(self);
        if (st == IPCW_OK) {
            self->messages++;
            self->nbytes += (unsigned long long)PyBytes_GET_SIZE(b);
            out = PyMemoryView_FromObject(b);
            Py_DECREF(b);
            leave(self);
            return out;
        }
    }
    leave(self);
    return fail_status(self, st, 0);
}

static PyObject *Ring_release_view(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (self->closed || self->producer)
        Py_RETURN_NONE;
    if (self->in_use) {
        raise_with(ipcw_LocalProtocolError, self, NULL,
                   "release_view() on %U while another thread receives", self->name);
        return NULL;
    }
    end_view(self);
    Py_RETURN_NONE;
}

/* ---- both ends ----------------------------------------------------------------------------- */

static PyObject *Ring_close(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    atomic_store(&self->interrupt, 1);
    drop_handed(self);
    self->loan_active = 0;
    self->view_active = 0;
    if (self->has_mem && self->ring.hdr != NULL) {
        if (self->producer && !self->in_use && !self->ring.corrupt)
            do_publish(self);
        ipcw_mark_closed(&self->ring, self->producer);
        ipcw_signal(self->w.wake_fd); /* the peer, parked on either side */
    }
    ipcw_signal(self->w.wait_fd); /* a thread of ours parked in this ring */
    Py_CLEAR(self->partial);
    maybe_free(self);
    Py_RETURN_NONE;
}

static PyObject *Ring_arm(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"size"};
    PyObject *a[1];
    if (parse_args(args, nargs, kwnames, names, 1, 0, a, "arm") < 0)
        return NULL;
    if (self->closed) {
        raise_with(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
        return NULL;
    }
    if (self->producer) {
        Py_ssize_t n = 0;
        if (a[0] != NULL && a[0] != Py_None) {
            n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
            if (n == -1 && PyErr_Occurred())
                return NULL;
        }
        uint64_t need = ipcw_need(&self->ring, n < 0 ? 0 : (uint64_t)n);
        do_publish(self);
        atomic_store_explicit(&self->ring.hdr->producer_need, need, memory_order_relaxed);
    } else if (!self->view_active) {
        do_release(self);
    }
    return PyBool_FromLong(ipcw_arm(&self->ring, self->producer));
}

static PyObject *Ring_disarm(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->closed && self->ring.hdr != NULL)
        ipcw_disarm(&self->ring, self->producer);
    Py_RETURN_NONE;
}

/* ---- buffer protocol: the active loan (writable) or view (read-only) ------------------------ */

static int Ring_getbuffer(RingObject *self, Py_buffer *view, int flags)
{
    int rc;
    if (self->producer ? !self->loan_active : !self->view_active) {
        PyErr_SetString(PyExc_BufferError,
                        self->producer ? "no loan is active" : "no message view is active");
        view->obj = NULL;
        return -1;
    }
    if (self->producer)
        rc = PyBuffer_FillInfo(view, (PyObject *)self, self->loan_ptr,
                               (Py_ssize_t)self->loan_size, 0, flags);
    else
        rc = PyBuffer_FillInfo(view, (PyObject *)self, self->view_rec.payload,
                               (Py_ssize_t)self->view_rec.len, 1, flags);
    if (rc == 0)
        self->exports++;
    return rc;
}

static void Ring_releasebuffer(RingObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
    maybe_free(self);
}

static PyBufferProcs Ring_as_buffer = {
    (getbufferproc)Ring_getbuffer,
    (releasebufferproc)Ring_releasebuffer,
};

/* ---- construction ----------------------------------------------------------------------- */

static int dup_fd(int fd, int nonblock)
{
    if (fd < 0)
        return -1;
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    if (nonblock) {
        int fl = fcntl(d, F_GETFL);
        if (fl < 0 || fcntl(d, F_SETFL, fl | O_NONBLOCK) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            close(d);
            return -2;
        }
    }
    return d;
}

static int parse_policy(const char *s)
{
    if (strcmp(s, "spin") == 0)
        return IPCW_SPIN;
    if (strcmp(s, "park") == 0)
        return IPCW_PARK;
    if (strcmp(s, "hybrid") == 0)
        return IPCW_HYBRID;
    return -1;
}

static PyObject *Ring_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    RingObject *self = (RingObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->w.wait_fd = self->w.wake_fd = self->w.alive_fd = -1;
        self->w.interrupt = &self->interrupt;
        self->max_message = DEFAULT_MAX_MESSAGE;
    }
    return (PyObject *)self;
}

static int Ring_init(RingObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer",  "role",   "offset",  "size",        "wait_fd", "wake_fd",
                             "alive_fd", "policy", "spin_ns", "max_message", "name",    NULL};
    PyObject *buffer, *name = NULL;
    const char *role, *policy = "hybrid";
    Py_ssize_t offset = 0, size = -1;
    int wait_fd = -1, wake_fd = -1, alive_fd = -1;
    long long spin_ns = 50000;
    unsigned long long max_message = DEFAULT_MAX_MESSAGE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Os|$nniiisLKU", kwlist, &buffer, &role,
                                     &offset, &size, &wait_fd, &wake_fd, &alive_fd, &policy,
                                     &spin_ns, &max_message, &name))
        return -1;
    if (self->has_mem || self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Ring.__init__ called twice");
        return -1;
    }
    int producer = strcmp(role, "producer") == 0;
    if (!producer && strcmp(role, "consumer") != 0) {
        PyErr_SetString(PyExc_ValueError, "role must be 'producer' or 'consumer'");
        return -1;
    }
    int pol = parse_policy(policy);
    if (pol < 0) {
        PyErr_SetString(PyExc_ValueError, "policy must be 'spin', 'park' or 'hybrid'");
        return -1;
    }
    if (spin_ns < 0) {
        PyErr_SetString(PyExc_ValueError, "spin_ns must not be negative");
        return -1;
    }
    Py_XSETREF(self->name, name ? Py_NewRef(name) : PyUnicode_FromString("shm ring"));
    if (self->name == NULL)
        return -1;
    if (PyObject_GetBuffer(buffer, &self->mem, PyBUF_WRITABLE) < 0)
        return -1;
    if (offset < 0 || offset > self->mem.len || (size >= 0 && size > self->mem.len - offset)) {
        PyBuffer_Release(&self->mem);
        PyErr_SetString(PyExc_ValueError, "offset/size outside the buffer");
        return -1;
    }
    unsigned char *base = (unsigned char *)self->mem.buf + offset;
    uint64_t avail = (uint64_t)(size >= 0 ? size : self->mem.len - offset);
    if (((uintptr_t)base & (IPCW_ALIGN - 1)) != 0) {
        PyBuffer_Release(&self->mem);
        PyErr_SetString(PyExc_ValueError, "a ring must start at a 16-byte aligned address");
        return -1;
    }
    self->has_mem = 1;
    self->producer = producer;
    if (ipcw_attach(&self->ring, base, avail, producer) != IPCW_OK) {
        const char *why = self->ring.why;
        self->has_mem = 0;
        PyBuffer_Release(&self->mem);
        raise_with(ipcw_RemoteProtocolError, self, NULL,
                   "%U: cannot attach to the shared-memory ring: %s", self->name, why);
        return -1;
    }
    self->w.policy = pol;
    self->w.spin_ns = spin_ns;
    self->max_message = max_message;
    if ((self->w.wait_fd = dup_fd(wait_fd, 1)) == -2 ||
        (self->w.wake_fd = dup_fd(wake_fd, 0)) == -2 ||
        (self->w.alive_fd = dup_fd(alive_fd, 0)) == -2) {
        self->closed = 1;
        if (self->w.wait_fd == -2)
            self->w.wait_fd = -1;
        if (self->w.wake_fd == -2)
            self->w.wake_fd = -1;
        self->w.alive_fd = self->w.alive_fd == -2 ? -1 : self->w.alive_fd;
        maybe_free(self);
        return -1;
    }
    return 0;
}

static int Ring_traverse(RingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handed);
    Py_VISIT(self->partial);
    Py_VISIT(self->name);
    return 0;
}

static int Ring_clear(RingObject *self)
{
    Py_CLEAR(self->handed);
    Py_CLEAR(self->partial);
    return 0;
}

static void Ring_dealloc(RingObject *self)
{
    PyObject_GC_UnTrack(self);
    Ring_clear(self);
    Py_CLEAR(self->name);
    self->closed = 1;
    self->in_use = 0;
    self->exports = 0;
    maybe_free(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- attributes ------------------------------------------------------------------------- */

static PyObject *Ring_get_capacity(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->ring.cap);
}

static PyObject *Ring_get_max_record(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->ring.cap ? ipcw_max_record(&self->ring) : 0);
}

static PyObject *Ring_get_role(RingObject *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(self->producer ? "producer" : "consumer");
}

static PyObject *Ring_get_closed(RingObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed);
}

static PyObject *Ring_get_policy(RingObject *self, void *c)
{
    (void)c;
    static const char *const names[] = {"spin", "park", "hybrid"};
    return PyUnicode_FromString(names[self->w.policy]);
}

static int Ring_set_policy(RingObject *self, PyObject *value, void *c)
{
    (void)c;
    const char *s = value ? PyUnicode_AsUTF8(value) : NULL;
    int pol = s ? parse_policy(s) : -1;
    if (pol < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "policy must be 'spin', 'park' or 'hybrid'");
        return -1;
    }
    self->w.policy = pol;
    return 0;
}

static PyObject *Ring_get_spin_ns(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromLongLong(self->w.spin_ns);
}

static int Ring_set_spin_ns(RingObject *self, PyObject *value, void *c)
{
    (void)c;
    long long v = value ? PyLong_AsLongLong(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "spin_ns must be a non-negative int");
        return -1;
    }
    self->w.spin_ns = v;
    return 0;
}

static PyObject *Ring_get_max_message(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->max_message);
}

static int Ring_set_max_message(RingObject *self, PyObject *value, void *c)
{
    (void)c;
    unsigned long long v = value ? PyLong_AsUnsignedLongLong(value) : (unsigned long long)-1;
    if (PyErr_Occurred() || value == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cannot delete max_message");
        return -1;
    }
    self->max_message = v;
    return 0;
}

static PyObject *Ring_get_messages(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->messages);
}

static PyObject *Ring_get_nbytes(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->nbytes);
}

static PyObject *Ring_get_buffered(RingObject *self, void *c)
{
    (void)c;
    if (!self->has_mem || self->ring.hdr == NULL)
        return PyLong_FromLong(0);
    if (self->producer)
        return PyLong_FromUnsignedLongLong(self->ring.pos - self->ring.peer);
    return PyLong_FromUnsignedLongLong(ipcw_used(&self->ring));
}

static PyObject *Ring_get_broken(RingObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->ring.corrupt || self->send_broken);
}

static PyGetSetDef Ring_getset[] = {
    {"capacity", (getter)Ring_get_capacity, NULL, "data bytes in the ring", NULL},
    {"max_record", (getter)Ring_get_max_record, NULL, "largest loan or view (half the ring)",
     NULL},
    {"role", (getter)Ring_get_role, NULL, "'producer' or 'consumer'", NULL},
    {"closed", (getter)Ring_get_closed, NULL, "close() was called", NULL},
    {"policy", (getter)Ring_get_policy, (setter)Ring_set_policy, "'spin', 'park' or 'hybrid'",
     NULL},
    {"spin_ns", (getter)Ring_get_spin_ns, (setter)Ring_set_spin_ns,
     "how long 'hybrid' spins before parking", NULL},
    {"max_message", (getter)Ring_get_max_message, (setter)Ring_set_max_message,
     "largest message accepted (consumer)", NULL},
    {"messages", (getter)Ring_get_messages, NULL, "messages sent or received", NULL},
    {"nbytes", (getter)Ring_get_nbytes, NULL, "payload bytes sent or received", NULL},
    {"buffered", (getter)Ring_get_buffered, NULL, "bytes in the ring not yet consumed", NULL},
    {"broken", (getter)Ring_get_broken, NULL, "corrupt, or a send stopped mid-message", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FAST (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef Ring_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Ring_send, FAST, "send(data, timeout=None)"},
    {"send_many", (PyCFunction)(void (*)(void))Ring_send_many, FAST,
     "send_many(items, timeout=None)"},
    {"loan", (PyCFunction)(void (*)(void))Ring_loan, FAST, "loan(size, timeout=None)"},
    {"commit", (PyCFunction)(void (*)(void))Ring_commit, FAST, "commit(size=None)"},
    {"abort", (PyCFunction)Ring_abort, METH_NOARGS, "abort the active loan"},
    {"recv", (PyCFunction)(void (*)(void))Ring_recv, FAST, "recv(timeout=None)"},
    {"recv_many", (PyCFunction)(void (*)(void))Ring_recv_many, FAST,
     "recv_many(max_messages=0, timeout=None)"},
    {"view", (PyCFunction)(void (*)(void))Ring_view, FAST, "view(timeout=None)"},
    {"release_view", (PyCFunction)Ring_release_view, METH_NOARGS, "release the active view"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "close this end"},
    {"arm", (PyCFunction)(void (*)(void))Ring_arm, FAST, "arm(size=0) -> ready"},
    {"disarm", (PyCFunction)Ring_disarm, METH_NOARGS, "clear the waiting flag"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject ipcw_RingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ipcwire._ext._native.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One end (producer or consumer) of a shared-memory ring.",
    .tp_new = Ring_new,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_traverse = (traverseproc)Ring_traverse,
    .tp_clear = (inquiry)Ring_clear,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
    .tp_as_buffer = &Ring_as_buffer,
};

/* init_ring(buffer, capacity, offset=0): write a fresh header (the creator, before sharing) */
PyObject *ipcw_init_ring(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *kwlist[] = {"buffer", "capacity", "offset", NULL};
    PyObject *buffer;
    unsigned long long cap;
    Py_ssize_t offset = 0;
    Py_buffer mem;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OK|n", kwlist, &buffer, &cap, &offset))
        return NULL;
    if (cap < IPCW_MIN_CAPACITY || cap > IPCW_MAX_CAPACITY || (cap & (cap - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "capacity must be a power of two from 4 KiB to 4 GiB");
        return NULL;
    }
    if (PyObject_GetBuffer(buffer, &mem, PyBUF_WRITABLE) < 0)
        return NULL;
    if (offset < 0 || offset > mem.len || (uint64_t)(mem.len - offset) < IPCW_HEADER_SIZE + cap ||
        (((uintptr_t)mem.buf + (uintptr_t)offset) & (IPCW_ALIGN - 1)) != 0) {
        PyBuffer_Release(&mem);
        PyErr_SetString(PyExc_ValueError,
                        "the buffer is too small for the ring, or the offset is not 16-aligned");
        return NULL;
    }
    ipcw_init((unsigned char *)mem.buf + offset, cap);
    PyBuffer_Release(&mem);
    Py_RETURN_NONE;
}
