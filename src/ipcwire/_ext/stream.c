/* ipcwire._ext._native.FrameSender: the send hot path of the blocking stream-socket channel.
 *
 * One FrameSender per connected stream socket (ipcwire/_stream/blocking.py). It owns the
 * channel's send lock (so the Python slow path, ``with sender:``, and this fast path never
 * interleave two messages) and the sent-message counters. ``send(payload)`` writes the 4-byte
 * big-endian length header (docs/protocol.md, framing "length") and the payload with one
 * vectored sendmsg(MSG_NOSIGNAL): first with MSG_DONTWAIT while holding the GIL (the usual
 * case, the socket buffer has room: no GIL round trip), and only when that would block or
 * writes part of the message, the rest with the GIL released. Policy stays in Python: what is
 * eligible (a bytes-like payload within the send limit; anything else returns False and the
 * caller takes its general path), timeouts (never here: the caller only uses this without a
 * send timeout), and turning an OSError into an ipcwire error.
 *
 * The same two classes serve pipes and FIFOs (ipcwire/pipe/_channel.py) in "fd mode": the fd
 * is a non-blocking pipe, writes use write(2), and only messages that fit in PIPE_BUF take
 * the C send path (POSIX makes those writes atomic: all of the message or EAGAIN, so the C
 * path never leaves half a message behind; anything else, and a full pipe, take the Python
 * path with its read-ahead). A FIFO that several writers share (``flock=True``) has each
 * such write hold a shared flock(2) on it, taken without waiting: held by a writer of a
 * message over PIPE_BUF (exclusive), the send is declined and the Python path waits for its
 * turn (ipcwire/fifo/_path.py says why short writes need the lock too). The receiver waits
 * with poll(2) on the pipe plus the stream's wake-up fds (the close waker, a child's
 * pidfd), all with the GIL released once; when one of those fires it returns None and the
 * Python path decides. A FIFO's receiver starts
 * without an fd and is enabled once the first writer was seen, and then always reads before
 * it waits (what ipcwire/pipe/_fd.py explains for FIFOs). Reads happen with the GIL
 * held, after checking that the fd was not disabled: the Python side disables these objects
 * before it closes an fd, so no read or write ever reaches a closed or recycled fd.
 */
#include "native.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pythread.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define MAX_PARTS 8

typedef struct {
    PyObject_HEAD
    int fd;                       /* -1 once disabled: send() declines, write() raises */
    int torn;                     /* a write stopped part-way through: disabled for good */
    Py_ssize_t limit;             /* largest payload send() frames itself */
    Py_ssize_t pipe_buf;          /* fd mode (a pipe): frames up to this size; 0: a socket */
    int flock_writes;             /* fd mode: each write holds a shared flock on the fd */
    PyThread_type_lock lock;      /* the channel's send lock */
    int held;                     /* the lock is taken (changed only with the GIL held) */
    unsigned long long messages;  /* messages written through this object */
    unsigned long long nbytes;    /* bytes written, headers included */
} FrameSender;

/* Take a lock: without releasing the GIL when it is free, else waiting with the GIL
 * released in short slices so that signal handlers (KeyboardInterrupt) still run. */
static int take_lock(PyThread_type_lock lock, int *held)
{
    if (!PyThread_acquire_lock(lock, NOWAIT_LOCK)) {
        for (;;) {
            PyLockStatus st;
            Py_BEGIN_ALLOW_THREADS
            st = PyThread_acquire_lock_timed(lock, 50000 /* µs */, 0);
            Py_END_ALLOW_THREADS
            if (st == PY_LOCK_ACQUIRED)
                break;
            if (PyErr_CheckSignals() < 0)
                return -1;
        }
    }
    *held = 1;
    return 0;
}

/* take_lock() for at most `timeout` seconds: 1 taken, 0 not within it, -1 with an error set
 * (what a signal handler raised). */
static int take_lock_within(PyThread_type_lock lock, int *held, double timeout)
{
    if (!PyThread_acquire_lock(lock, NOWAIT_LOCK)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double deadline = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 + timeout;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = deadline - ((double)now.tv_sec + (double)now.tv_nsec * 1e-9);
            if (left <= 0)
                return 0;
            PY_TIMEOUT_T us = left < 0.05 ? (PY_TIMEOUT_T)(left * 1e6) + 1 : 50000;
            PyLockStatus st;
            Py_BEGIN_ALLOW_THREADS
            st = PyThread_acquire_lock_timed(lock, us, 0);
            Py_END_ALLOW_THREADS
            if (st == PY_LOCK_ACQUIRED)
                break;
            if (PyErr_CheckSignals() < 0)
                return -1;
        }
    }
    *held = 1;
    return 1;
}

static void give_lock(PyThread_type_lock lock, int *held)
{
    *held = 0;
    PyThread_release_lock(lock);
}

static int sender_lock(FrameSender *self) { return take_lock(self->lock, &self->held); }

static void sender_unlock(FrameSender *self) { give_lock(self->lock, &self->held); }

/* Write every byte of iov[0..cnt) to self's fd (the lock held, the GIL held on entry and on
 * return). The fd is read again before every try: a channel closed from another thread while
 * this one waited (disable() sets it to -1, then the fd is closed and its number may be
 * reused) must not have the rest of the message written into whatever has that number now.
 * Returns 0, or -1 with OSError (EBADF once disabled, or what a signal handler raised) set.
 * A failure after part of the data went out (a signal handler's KeyboardInterrupt, a reset)
 * leaves the stream out of step: the sender is then torn, and disabled for good, so that no
 * other thread writes a frame after the torn one before the Python side knows. */
static int write_all(FrameSender *self, struct iovec *iov, int cnt)
{
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    size_t written = 0;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    int rc = 0;
    while (cnt > 0) {
        ssize_t n;
        int err;
        int fd = self->fd;
        if (fd < 0) {
            errno = EBADF;
            PyErr_SetFromErrno(PyExc_OSError);
            rc = -1;
            break;
        }
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)cnt;
        if (flags & MSG_DONTWAIT) {
            n = sendmsg(fd, &msg, flags);
            err = errno;
        }
        else {
            Py_BEGIN_ALLOW_THREADS
            n = sendmsg(fd, &msg, flags);
            err = errno;
            if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
                /* a non-blocking fd: wait for room, then try again */
                struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
                (void)poll(&p, 1, -1);
                err = EINTR;
            }
            Py_END_ALLOW_THREADS
        }
        if (n < 0) {
            if ((err == EAGAIN || err == EWOULDBLOCK) && (flags & MSG_DONTWAIT)) {
                flags &= ~MSG_DONTWAIT;
                continue;
            }
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    rc = -1;
                    break;
                }
                continue;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            rc = -1;
            break;
        }
        written += (size_t)n;
        size_t done = (size_t)n;
        while (cnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
            flags &= ~MSG_DONTWAIT; /* part of a message is out: finish it, waiting if need be */
            /* A signal that came while that write made progress interrupted nothing: run its
             * handler now, or Ctrl-C waits until the peer has read the whole message. */
            if (PyErr_CheckSignals() < 0) {
                rc = -1;
                break;
            }
        }
    }
    if (rc < 0 && written > 0) {
        self->torn = 1;
        self->fd = -1;
    }
    return rc;
}

static int sender_init(FrameSender *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "limit", "pipe_buf", "flock", NULL};
    int fd, flock_writes = 0;
    Py_ssize_t limit, pipe_buf = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "in|$np:FrameSender", kwlist, &fd, &limit,
                                     &pipe_buf, &flock_writes))
        return -1;
    if (fd < 0 || limit < 0 || (uint64_t)limit > UINT32_MAX || pipe_buf < 0 ||
        (flock_writes && !pipe_buf)) {
        PyErr_SetString(PyExc_ValueError, "FrameSender: fd must be >= 0, limit 0..2**32-1, "
                                          "pipe_buf >= 0, and flock only with pipe_buf");
        return -1;
    }
    if (self->lock == NULL) {
        self->lock = PyThread_allocate_lock();
        if (self->lock == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->fd = fd;
    self->limit = limit;
    self->pipe_buf = pipe_buf;
    self->flock_writes = flock_writes;
    return 0;
}

/* fd mode: one write(2) of a whole frame that fits in PIPE_BUF, with the GIL held (the pipe
 * is non-blocking). 1: written; 0: the pipe is full, nothing written (the caller's Python
 * path waits, reading ahead meanwhile); -1: an error is set. */
static int pipe_write_frame(int fd, struct iovec *iov, int cnt, size_t total)
{
    for (;;) {
        ssize_t n = writev(fd, iov, cnt);
        if (n >= 0 && (size_t)n == total)
            return 1;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0 && errno == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (n < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        /* A partial write of at most PIPE_BUF bytes: POSIX rules it out for pipes and FIFOs
         * (the only fds fd mode is used on). Say so rather than leave the stream torn. */
        errno = EIO;
        PyErr_SetString(PyExc_OSError, "a write of at most PIPE_BUF bytes to a pipe was cut "
                                       "short; the stream is out of step");
        return -1;
    }
}

/* fd mode on a shared FIFO: pipe_write_frame under a shared flock, taken without waiting.
 * 0 (declined, nothing written) when another writer holds it exclusively, as for a full
 * pipe: the caller's Python path waits for it, honouring its timeout. */
static int locked_write_frame(int fd, struct iovec *iov, int cnt, size_t total)
{
    while (flock(fd, LOCK_SH | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    int rc = pipe_write_frame(fd, iov, cnt, total);
    int err = errno;
    (void)flock(fd, LOCK_UN);
    errno = err;
    return rc;
}

static void sender_dealloc(FrameSender *self)
{
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* send(payload) -> bool: frame and write a bytes, bytearray or memoryview payload. False
 * (nothing written) when the payload is another type, not contiguous, over the limit, or the
 * sender is disabled; the caller then takes its general path. */
static PyObject *sender_send(FrameSender *self, PyObject *payload)
{
    Py_buffer view;
    int have_view = 0;
    const char *data;
    Py_ssize_t len;
    if (PyBytes_CheckExact(payload)) {
        data = PyBytes_AS_STRING(payload);
        len = PyBytes_GET_SIZE(payload);
    }
    else if (PyBytes_Check(payload) || PyByteArray_Check(payload) ||
             PyMemoryView_Check(payload)) {
        if (PyObject_GetBuffer(payload, &view, PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        have_view = 1;
        data = view.buf;
        len = view.len;
    }
    else {
        Py_RETURN_FALSE;
    }
    if (len > self->limit || self->fd < 0 || (self->pipe_buf && len + 4 > self->pipe_buf)) {
        if (have_view)
            PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    unsigned char header[4];
    uint32_t n32 = (uint32_t)len;
    header[0] = (unsigned char)(n32 >> 24);
    header[1] = (unsigned char)(n32 >> 16);
    header[2] = (unsigned char)(n32 >> 8);
    header[3] = (unsigned char)n32;
    struct iovec iov[2] = {{header, 4}, {(void *)data, (size_t)len}};
    int rc = -1;
    if (sender_lock(self) == 0) {
        if (self->fd < 0) {
            sender_unlock(self);
            if (have_view)
                PyBuffer_Release(&view);
            Py_RETURN_FALSE;
        }
        if (self->pipe_buf) {
            rc = (self->flock_writes ? locked_write_frame : pipe_write_frame)(
                self->fd, iov, len ? 2 : 1, 4 + (size_t)len);
            rc = rc == 1 ? 0 : rc == 0 ? 1 : -1; /* 0: written, 1: declined (full) */
        }
        else
            rc = write_all(self, iov, len ? 2 : 1);
        if (rc == 0) {
            self->messages++;
            self->nbytes += 4 + (unsigned long long)len;
        }
        sender_unlock(self);
    }
    if (have_view)
        PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    if (rc > 0)
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* write(data, count=1): write an already framed buffer (or a tuple of up to 8 buffers) that
 * holds ``count`` messages. The caller holds the lock (``with sender:``). */
static PyObject *sender_write(FrameSender *self, PyObject *args)
{
    PyObject *data;
    Py_ssize_t count = 1;
    if (!PyArg_ParseTuple(args, "O|n:write", &data, &count))
        return NULL;
    if (self->fd < 0) {
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (self->pipe_buf) {
        PyErr_SetString(PyExc_TypeError, "write: a socket's method (fd mode writes in Python)");
        return NULL;
    }
    PyObject *parts = PyTuple_Check(data) ? data : NULL;
    Py_ssize_t cnt = parts ? PyTuple_GET_SIZE(parts) : 1;
    if (cnt < 0 || cnt > MAX_PARTS) {
        PyErr_SetString(PyExc_ValueError, "write: at most 8 buffers");
        return NULL;
    }
    Py_buffer views[MAX_PARTS];
    struct iovec iov[MAX_PARTS];
    Py_ssize_t got = 0, total = 0;
    int ok = 1;
    for (; got < cnt; got++) {
        PyObject *part = parts ? PyTuple_GET_ITEM(parts, got) : data;
        if (PyObject_GetBuffer(part, &views[got], PyBUF_C_CONTIGUOUS) < 0) {
            ok = 0;
            break;
        }
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
        total += views[got].len;
    }
    if (ok) {
        /* skip empty parts so that write_all never sees a zero-length first buffer */
        int used = 0;
        for (Py_ssize_t i = 0; i < got; i++)
            if (iov[i].iov_len)
                iov[used++] = iov[i];
        if (write_all(self, iov, used) < 0)
            ok = 0;
        else {
            self->messages += (unsigned long long)count;
            self->nbytes += (unsigned long long)total;
        }
    }
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *sender_disable(FrameSender *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;
    Py_RETURN_NONE;
}

static PyObject *sender_enter(FrameSender *self, PyObject *Py_UNUSED(ignored))
{
    if (sender_lock(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *sender_exit(FrameSender *self, PyObject *Py_UNUSED(args))
{
    if (!self->held) {
        PyErr_SetString(PyExc_RuntimeError, "FrameSender: release of an unheld send lock");
        return NULL;
    }
    sender_unlock(self);
    Py_RETURN_FALSE;
}

/* acquire(blocking=True) -> bool and release(): the send lock as a threading.Lock (close()
 * takes it without waiting to write the goodbye frame after the last whole message). */
static PyObject *sender_acquire(FrameSender *self, PyObject *args)
{
    int blocking = 1;
    if (!PyArg_ParseTuple(args, "|p:acquire", &blocking))
        return NULL;
    if (blocking) {
        if (sender_lock(self) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK))
        Py_RETURN_FALSE;
    self->held = 1;
    Py_RETURN_TRUE;
}

static PyObject *sender_release(FrameSender *self, PyObject *Py_UNUSED(ignored))
{
    return sender_exit(self, NULL);
}

static PyObject *sender_get_messages(FrameSender *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->messages);
}

static PyObject *sender_get_nbytes(FrameSender *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->nbytes);
}

static PyObject *sender_get_fd(FrameSender *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *sender_get_torn(FrameSender *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->torn);
}

static PyMethodDef sender_methods[] = {
    {"send", (PyCFunction)sender_send, METH_O,
     "send(payload) -> bool: frame and write one bytes-like payload; False if not eligible"},
    {"write", (PyCFunction)sender_write, METH_VARARGS,
     "write(data, count=1): write framed bytes (a buffer or a tuple of buffers); lock held"},
    {"disable", (PyCFunction)sender_disable, METH_NOARGS,
     "disable(): from now on send() declines and write() raises EBADF"},
    {"acquire", (PyCFunction)sender_acquire, METH_VARARGS,
     "acquire(blocking=True) -> bool: take the send lock (without waiting: False if held)"},
    {"release", (PyCFunction)sender_release, METH_NOARGS, "release the send lock"},
    {"__enter__", (PyCFunction)sender_enter, METH_NOARGS, "take the send lock"},
    {"__exit__", (PyCFunction)sender_exit, METH_VARARGS, "release the send lock"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sender_getset[] = {
    {"messages", (getter)sender_get_messages, NULL, "messages written", NULL},
    {"nbytes", (getter)sender_get_nbytes, NULL, "bytes written, headers included", NULL},
    {"fd", (getter)sender_get_fd, NULL, "the socket's fd, -1 once disabled", NULL},
    {"torn", (getter)sender_get_torn, NULL,
     "a write stopped part-way through a message (the sender is disabled for good)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ipcw_FrameSenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ipcwire._ext._native.FrameSender",
    .tp_basicsize = sizeof(FrameSender),
    .tp_dealloc = (destructor)sender_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FrameSender(fd, limit): the send lock, counters and length-framed writes of "
              "one connected stream socket",
    .tp_methods = sender_methods,
    .tp_getset = sender_getset,
    .tp_init = (initproc)sender_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------------------------
 * FrameReceiver: the receive hot path of the same channel, for raw-bytes messages with
 * length framing. It owns the channel's receive lock and works on the channel's decoder
 * (ipcwire/_core/framing.py, FrameDecoder: ``_buf``, ``_start``, ``_end``, ``_skip``,
 * ``max_frame``) so that the Python path and this one share one buffer. ``recv()`` returns
 * the next buffered frame as bytes; with nothing buffered it reads once into the empty buffer
 * (GIL released) and returns the frame that arrived. Whenever anything is unusual (the lock
 * is taken, a partial frame, an oversized frame, end of stream, a receive timeout still set
 * on the socket) it returns None having changed nothing the Python path cannot continue from,
 * and the Python path decides. */

#define MAX_WAITS 2

typedef struct {
    PyObject_HEAD
    int fd; /* -1: take() only (asyncio), or disabled */
    int nwaits; /* fd mode: the pipe's wake-up fds (>= 0 of them); -1: a socket */
    int waits[MAX_WAITS];
    int hot;    /* fd mode: the last read filled the buffer, so read before waiting */
    int read_first; /* fd mode: always read before waiting (a FIFO: see ipcwire/pipe/_fd.py) */
    int dead;   /* disabled for good: enable() refuses */
    PyObject *decoder;
    PyThread_type_lock lock;
    int held;
    unsigned long long messages;
    unsigned long long nbytes; /* payload bytes, as the Python path counts them */
} FrameReceiver;

static PyObject *str_buf, *str_start, *str_end, *str_skip, *str_max_frame;

static int intern_names(void)
{
    if (str_buf != NULL)
        return 0;
    str_buf = PyUnicode_InternFromString("_buf");
    str_start = PyUnicode_InternFromString("_start");
    str_end = PyUnicode_InternFromString("_end");
    str_skip = PyUnicode_InternFromString("_skip");
    str_max_frame = PyUnicode_InternFromString("max_frame");
    return (str_buf && str_start && str_end && str_skip && str_max_frame) ? 0 : -1;
}

static int get_ssize(PyObject *obj, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int set_ssize(PyObject *obj, PyObject *name, Py_ssize_t value)
{
    PyObject *v = PyLong_FromSsize_t(value);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return rc;
}

static int receiver_init(FrameReceiver *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "decoder", "waits", "read_first", NULL};
    int fd, read_first = 0;
    PyObject *decoder, *waits = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO|$Op:FrameReceiver", kwlist, &fd, &decoder,
                                     &waits, &read_first))
        return -1;
    if (fd < -1) {
        PyErr_SetString(PyExc_ValueError, "FrameReceiver: fd must be >= 0, or -1 (take only)");
        return -1;
    }
    self->nwaits = -1;
    self->hot = 0;
    self->read_first = read_first;
    self->dead = 0;
    if (waits != Py_None) {
        if (!PyTuple_Check(waits) || PyTuple_GET_SIZE(waits) > MAX_WAITS) {
            PyErr_SetString(PyExc_ValueError, "FrameReceiver: waits is a tuple of up to 2 fds");
            return -1;
        }
        self->nwaits = 0;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(waits); i++) {
            long w = PyLong_AsLong(PyTuple_GET_ITEM(waits, i));
            if (w == -1 && PyErr_Occurred())
                return -1;
            if (w < 0 || w > INT32_MAX) {
                PyErr_SetString(PyExc_ValueError, "FrameReceiver: a wait fd must be >= 0");
                return -1;
            }
            self->waits[self->nwaits++] = (int)w;
        }
    }
    if (intern_names() < 0)
        return -1;
    if (self->lock == NULL) {
        self->lock = PyThread_allocate_lock();
        if (self->lock == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->fd = fd;
    Py_INCREF(decoder);
    Py_XSETREF(self->decoder, decoder);
    return 0;
}

static void receiver_dealloc(FrameReceiver *self)
{
    Py_CLEAR(self->decoder);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The next whole frame in the decoder's buffer as bytes (advancing ``_start``), Py_None when
 * there is none or it is not an ordinary one (lock held, GIL held). ``*end_out`` gets
 * ``_end``, or -1 if the buffer cannot be read from here. */
static PyObject *take_frame(FrameReceiver *self, Py_ssize_t *end_out)
{
    PyObject *dec = self->decoder;
    Py_ssize_t start, end, skip, max_frame;
    *end_out = -1;
    if (get_ssize(dec, str_skip, &skip) < 0 || get_ssize(dec, str_start, &start) < 0 ||
        get_ssize(dec, str_end, &end) < 0)
        return NULL;
    if (skip != 0)
        Py_RETURN_NONE;
    *end_out = end;
    if (end - start < 4)
        Py_RETURN_NONE;
    PyObject *buf = PyObject_GetAttr(dec, str_buf);
    if (buf == NULL)
        return NULL;
    if (!PyByteArray_Check(buf) || start < 0 || end > PyByteArray_GET_SIZE(buf)) {
        Py_DECREF(buf);
        *end_out = -1;
        Py_RETURN_NONE;
    }
    const unsigned char *p = (const unsigned char *)PyByteArray_AS_STRING(buf) + start;
    Py_ssize_t n = (Py_ssize_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                                ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
    if (get_ssize(dec, str_max_frame, &max_frame) < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    if (n > max_frame || n > end - start - 4) {
        Py_DECREF(buf);
        Py_RETURN_NONE; /* oversized (the Python path raises FrameTooLarge) or partial */
    }
    PyObject *frame = PyBytes_FromStringAndSize((const char *)p + 4, n);
    Py_DECREF(buf);
    if (frame == NULL)
        return NULL;
    Py_ssize_t stop = start + 4 + n;
    int rc = stop == end ? (set_ssize(dec, str_start, 0) | set_ssize(dec, str_end, 0))
                         : set_ssize(dec, str_start, stop);
    if (rc < 0) {
        Py_DECREF(frame);
        return NULL;
    }
    return frame;
}

/* The decoder's buffer, writable (lock held, GIL held): 1 and ``*buf``/``*view`` set (give
 * them back with PyBuffer_Release and Py_DECREF), 0 when it is not a bytearray the C path can
 * fill (the Python path takes over), -1 on an error. */
static int decoder_buffer(FrameReceiver *self, PyObject **buf, Py_buffer *view)
{
    *buf = PyObject_GetAttr(self->decoder, str_buf);
    if (*buf == NULL)
        return -1;
    if (!PyByteArray_Check(*buf) || PyObject_GetBuffer(*buf, view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        Py_DECREF(*buf);
        return 0;
    }
    return 1;
}

/* One read into the empty buffer (lock held, GIL held on entry and return): 1 when bytes
 * arrived (``_end`` updated), 0 when the Python path should take over, -1 on an error. */
static int read_once(FrameReceiver *self)
{
    PyObject *buf;
    Py_buffer view;
    int got = decoder_buffer(self, &buf, &view);
    if (got <= 0)
        return got;
    ssize_t n;
    int err;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        n = recv(self->fd, view.buf, (size_t)view.len, 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n < 0 && err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                break;
            continue;
        }
        break;
    }
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (n < 0) {
        if (PyErr_Occurred())
            return -1; /* a signal handler raised */
        if (err == EAGAIN || err == EWOULDBLOCK)
            return 0; /* a receive timeout left on the socket: the Python path resets it */
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (n == 0)
        return 0; /* end of stream: the Python path reads it again and reports it */
    return set_ssize(self->decoder, str_end, (Py_ssize_t)n) < 0 ? -1 : 1;
}

/* fd mode's read_once: read the pipe into the empty buffer, first waiting (GIL released) for
 * it or one of the wake-up fds. Same results as read_once; a wake-up fd that fires, end of
 * stream, a spurious wake-up with nothing to read after it and a disabled receiver all give
 * 0, and the Python path (which polls the same fds) decides what they mean. */
static int read_fd_once(FrameReceiver *self)
{
    PyObject *buf;
    Py_buffer view;
    int got = decoder_buffer(self, &buf, &view);
    if (got <= 0)
        return got;
    int rc = 0;
    ssize_t n = -1;
    for (;;) {
        if (self->fd < 0)
            break; /* disabled while we waited: the fd may be closed now */
        if (self->hot || self->read_first) {
            n = read(self->fd, view.buf, (size_t)view.len); /* non-blocking, GIL held */
            if (n > 0)
                break;
            if (n == 0)
                break; /* end of stream */
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    rc = -1;
                    break;
                }
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyErr_SetFromErrno(PyExc_OSError);
                rc = -1;
                break;
            }
            self->hot = 0; /* empty: wait first from now on (a ping-pong saves a syscall) */
        }
        struct pollfd p[1 + MAX_WAITS];
        int np = 1;
        p[0].fd = self->fd;
        p[0].events = POLLIN;
        p[0].revents = 0;
        for (int i = 0; i < self->nwaits; i++, np++) {
            p[np].fd = self->waits[i];
            p[np].events = POLLIN;
            p[np].revents = 0;
        }
        int ready, err;
        Py_BEGIN_ALLOW_THREADS
        ready = poll(p, (nfds_t)np, -1);
        err = errno;
        Py_END_ALLOW_THREADS
        if (ready < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    rc = -1;
                    break;
                }
                continue;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            rc = -1;
            break;
        }
        int other = 0;
        for (int i = 1; i < np; i++)
            other |= p[i].revents != 0;
        if (other || (p[0].revents & POLLNVAL))
            break; /* closing, or the child exited: the Python path decides */
        if (p[0].revents)
            self->hot = 1; /* readable (data, or hang-up): read it at the top */
    }
    PyBuffer_Release(&view);
    Py_DECREF(buf);
    if (rc < 0 || n <= 0)
        return rc;
    self->hot = n == view.len;
    return set_ssize(self->decoder, str_end, (Py_ssize_t)n) < 0 ? -1 : 1;
}

static int receiver_lock(FrameReceiver *self) { return take_lock(self->lock, &self->held); }

static void receiver_unlock(FrameReceiver *self) { give_lock(self->lock, &self->held); }

/* recv() -> bytes | None (see above). Never waits for the lock: if another thread holds it,
 * None, and the caller waits on the lock in its own path. */
static PyObject *receiver_recv(FrameReceiver *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd < 0 || !PyThread_acquire_lock(self->lock, NOWAIT_LOCK))
        Py_RETURN_NONE;
    self->held = 1;
    Py_ssize_t end;
    PyObject *frame = take_frame(self, &end);
    if (frame == Py_None && end == 0) {
        Py_DECREF(frame);
        int rc = self->nwaits < 0 ? read_once(self) : read_fd_once(self);
        frame = rc < 0 ? NULL : rc == 0 ? Py_NewRef(Py_None) : take_frame(self, &end);
    }
    if (frame != NULL && frame != Py_None) {
        self->messages++;
        self->nbytes += (unsigned long long)PyBytes_GET_SIZE(frame);
    }
    receiver_unlock(self);
    return frame;
}

/* take() -> bytes | None: the next ordinary frame already in the decoder's buffer; no lock,
 * no read, not counted (for a caller that holds the receive lock or runs on an event loop). */
static PyObject *receiver_take(FrameReceiver *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t end;
    return take_frame(self, &end);
}

static PyObject *receiver_acquire(FrameReceiver *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|pd:acquire", kwlist, &blocking, &timeout))
        return NULL;
    if (!blocking) {
        if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK))
            Py_RETURN_FALSE;
        self->held = 1;
        Py_RETURN_TRUE;
    }
    if (timeout >= 0) { /* as threading.Lock.acquire(True, timeout) */
        int got = take_lock_within(self->lock, &self->held, timeout);
        if (got < 0)
            return NULL;
        return PyBool_FromLong(got);
    }
    if (receiver_lock(self) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *receiver_release(FrameReceiver *self, PyObject *Py_UNUSED(args))
{
    if (!self->held) {
        PyErr_SetString(PyExc_RuntimeError, "FrameReceiver: release of an unheld lock");
        return NULL;
    }
    receiver_unlock(self);
    Py_RETURN_FALSE;
}

static PyObject *receiver_disable(FrameReceiver *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;
    self->dead = 1;
    Py_RETURN_NONE;
}

/* enable(fd) -> bool: start reading ``fd`` (fd mode, created with fd -1); False, and nothing
 * changes, once disable() was called (the stream may have closed the fd meanwhile). */
static PyObject *receiver_enable(FrameReceiver *self, PyObject *arg)
{
    long lfd = PyLong_AsLong(arg);
    if (lfd == -1 && PyErr_Occurred())
        return NULL;
    int fd = lfd > INT32_MAX ? -1 : (int)lfd;
    if (fd < 0 || self->nwaits < 0) {
        PyErr_SetString(PyExc_ValueError, "enable: an fd >= 0, on a receiver in fd mode");
        return NULL;
    }
    if (self->dead)
        Py_RETURN_FALSE;
    self->fd = fd;
    Py_RETURN_TRUE;
}

static PyObject *receiver_get_messages(FrameReceiver *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->messages);
}

static PyObject *receiver_get_nbytes(FrameReceiver *self, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(self->nbytes);
}

static PyMethodDef receiver_methods[] = {
    {"recv", (PyCFunction)receiver_recv, METH_NOARGS,
     "recv() -> bytes | None: the next frame, reading once into an empty buffer; None: "
     "the caller's general path"},
    {"take", (PyCFunction)receiver_take, METH_NOARGS,
     "take() -> bytes | None: the next whole frame in the buffer (no lock, no read, not "
     "counted)"},
    {"acquire", (PyCFunction)(void (*)(void))receiver_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: take the receive lock (within timeout "
     "seconds, when it is not negative)"},
    {"release", (PyCFunction)receiver_release, METH_NOARGS, "release the receive lock"},
    {"disable", (PyCFunction)receiver_disable, METH_NOARGS,
     "disable(): from now on recv() returns None, for good"},
    {"enable", (PyCFunction)receiver_enable, METH_O,
     "enable(fd) -> bool: fd mode, start reading fd; False once disabled"},
    {"__enter__", (PyCFunction)(void (*)(void))receiver_acquire, METH_VARARGS | METH_KEYWORDS,
     "take the receive lock"},
    {"__exit__", (PyCFunction)receiver_release, METH_VARARGS, "release the receive lock"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef receiver_getset[] = {
    {"messages", (getter)receiver_get_messages, NULL, "messages returned by recv()", NULL},
    {"nbytes", (getter)receiver_get_nbytes, NULL, "payload bytes returned by recv()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ipcw_FrameReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ipcwire._ext._native.FrameReceiver",
    .tp_basicsize = sizeof(FrameReceiver),
    .tp_dealloc = (destructor)receiver_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FrameReceiver(fd, decoder): the receive lock, counters and raw-bytes frame "
              "reads of one connected stream socket",
    .tp_methods = receiver_methods,
    .tp_getset = receiver_getset,
    .tp_init = (initproc)receiver_init,
    .tp_new = PyType_GenericNew,
};

/* recv_within(fd, buffer, timeout, current) -> n: one recv(2) on a blocking socket into the
 * writable ``buffer``, waiting at most ``timeout`` seconds (> 0) through SO_RCVTIMEO, which
 * ``current`` says is set on the socket now (0: none). Why not Python's own recv with
 * SO_RCVTIMEO set: the kernel ends such a wait with EINTR whenever a signal handler is to run,
 * and Python retries it with the whole SO_RCVTIMEO again (PEP 475), so a process taking
 * signals more often than its timeout never timed out. Here an interrupted wait runs the
 * handlers (an exception from one is raised) and goes on for what is left of ``timeout``. On
 * return the socket's SO_RCVTIMEO is ``timeout`` (the caller keeps that as ``current``), so
 * the usual call makes one system call, as Python's would. EAGAIN (the time is up) raises
 * BlockingIOError. */
static int set_rcvtimeo(int fd, double seconds)
{
    if (seconds > 1e8)
        seconds = 1e8;
    struct timeval tv;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    if (tv.tv_sec <= 0 && tv.tv_usec <= 0) { /* zero would mean "no limit" */
        tv.tv_sec = 0;
        tv.tv_usec = 1;
    }
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static double monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

PyObject *ipcw_recv_within(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    Py_buffer view;
    double timeout, current;
    if (!PyArg_ParseTuple(args, "iw*dd", &fd, &view, &timeout, &current))
        return NULL;
    if (!(timeout > 0)) { /* NaN too */
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "recv_within: timeout must be over 0");
        return NULL;
    }
    double deadline = monotonic_now() + timeout;
    ssize_t n = -1;
    int err = 0, moved = 0;
    if (current != timeout && set_rcvtimeo(fd, timeout) < 0) {
        err = errno;
        goto done;
    }
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        n = recv(fd, view.buf, (size_t)view.len, 0);
        err = errno;
        Py_END_ALLOW_THREADS
        if (n >= 0 || err != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            break; /* a handler raised (KeyboardInterrupt...) */
        double left = deadline - monotonic_now();
        if (left <= 0) {
            err = EAGAIN;
            break;
        }
        if (set_rcvtimeo(fd, left) < 0) {
            err = errno;
            break;
        }
        moved = 1;
    }
done:
    if (moved)
        (void)set_rcvtimeo(fd, timeout); /* as the caller will believe */
    PyBuffer_Release(&view);
    if (n < 0) {
        if (PyErr_Occurred())
            return NULL;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(n);
}
