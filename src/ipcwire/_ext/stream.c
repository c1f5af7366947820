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
 */
#include "native.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "pythread.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

#define MAX_PARTS 8

typedef struct {
    PyObject_HEAD
    int fd;                       /* -1 once disabled: send() declines, write() raises */
    Py_ssize_t limit;             /* largest payload send() frames itself */
    PyThread_type_lock lock;      /* the channel's send lock */
    int held;                     /* the lock is taken (changed only with the GIL held) */
    unsigned long long messages;  /* messages written through this object */
    unsigned long long nbytes;    /* bytes written, headers included */
} FrameSender;

/* Take the lock: without releasing the GIL when it is free, else waiting with the GIL
 * released in short slices so that signal handlers (KeyboardInterrupt) still run. */
static int sender_lock(FrameSender *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        for (;;) {
            PyLockStatus st;
            Py_BEGIN_ALLOW_THREADS
            st = PyThread_acquire_lock_timed(self->lock, 50000 /* µs */, 0);
            Py_END_ALLOW_THREADS
            if (st == PY_LOCK_ACQUIRED)
                break;
            if (PyErr_CheckSignals() < 0)
                return -1;
        }
    }
    self->held = 1;
    return 0;
}

static void sender_unlock(FrameSender *self)
{
    self->held = 0;
    PyThread_release_lock(self->lock);
}

/* Write every byte of iov[0..cnt) (the lock held, the GIL held on entry and on return).
 * Returns 0, or -1 with OSError (or what a signal handler raised) set. */
static int write_all(int fd, struct iovec *iov, int cnt)
{
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    while (cnt > 0) {
        ssize_t n;
        int err;
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
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
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
        }
    }
    return 0;
}

static int sender_init(FrameSender *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "limit", NULL};
    int fd;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "in:FrameSender", kwlist, &fd, &limit))
        return -1;
    if (fd < 0 || limit < 0 || (uint64_t)limit > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "FrameSender: fd must be >= 0, limit 0..2**32-1");
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
    return 0;
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
    if (len > self->limit || self->fd < 0) {
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
        rc = write_all(self->fd, iov, len ? 2 : 1);
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
        if (write_all(self->fd, iov, used) < 0)
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

static PyMethodDef sender_methods[] = {
    {"send", (PyCFunction)sender_send, METH_O,
     "send(payload) -> bool: frame and write one bytes-like payload; False if not eligible"},
    {"write", (PyCFunction)sender_write, METH_VARARGS,
     "write(data, count=1): write framed bytes (a buffer or a tuple of buffers); lock held"},
    {"disable", (PyCFunction)sender_disable, METH_NOARGS,
     "disable(): from now on send() declines and write() raises EBADF"},
    {"__enter__", (PyCFunction)sender_enter, METH_NOARGS, "take the send lock"},
    {"__exit__", (PyCFunction)sender_exit, METH_VARARGS, "release the send lock"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sender_getset[] = {
    {"messages", (getter)sender_get_messages, NULL, "messages written", NULL},
    {"nbytes", (getter)sender_get_nbytes, NULL, "bytes written, headers included", NULL},
    {"fd", (getter)sender_get_fd, NULL, "the socket's fd, -1 once disabled", NULL},
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
