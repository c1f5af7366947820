/* ipcwire Ring (see ringobject.h): close, arm/disarm, the buffer protocol (the active loan
 * or view), construction, attributes and the type itself. */
#include "ringobject.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* ---- both ends ----------------------------------------------------------------------------- */

/* close() and abandon(): `mark` says whether the peer is told this end closed (the flag in
 * shared memory); without it, the peer sees this end go away once its fds are closed. */
static PyObject *ring_close(RingObject *self, int mark)
{
    if (self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    atomic_store(&self->interrupt, 1);
    if (self->has_mem && self->ring.hdr != NULL) {
        if (self->producer && !self->in_use && !self->ring.corrupt)
            rg_publish(self);
        if (mark)
            ipcw_mark_closed(&self->ring, self->producer);
        ipcw_signal(self->w.wake_fd, self->w.wake_sock); /* the peer, parked on either side */
    }
    ipcw_wake_self(&self->w); /* a thread of ours parked in this ring */
    /* only now: releasing the loan's or view's memoryview may free the fds and the mapping
     * (the peer would then never see the closed flag, and take the close for a crash) */
    rg_drop_handed(self);
    self->loan_active = 0;
    self->view_active = 0;
    rg_maybe_free(self); /* (the partial message too: a receiver may be filling it) */
    Py_RETURN_NONE;
}

static PyObject *Ring_close(RingObject *self, PyObject *unused)
{
    (void)unused;
    return ring_close(self, 1);
}

static PyObject *Ring_abandon(RingObject *self, PyObject *unused)
{
    (void)unused;
    return ring_close(self, 0);
}

static PyObject *Ring_arm(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"size"};
    PyObject *a[1];
    Py_ssize_t n = 0;
    if (rg_parse(args, nargs, kwnames, names, 1, 0, a, "arm") < 0)
        return NULL;
    if (a[0] != NULL && a[0] != Py_None) {
        n = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    if (rg_enter(self, self->producer, FOREVER) < 0)
        return NULL;
    if (self->producer) {
        uint64_t need = ipcw_need(&self->ring, n < 0 ? 0 : (uint64_t)n);
        rg_publish(self);
        atomic_store_explicit(&self->ring.hdr->producer_need, need, memory_order_relaxed);
    } else if (!self->view_active) {
        rg_release(self);
    }
    int ready = ipcw_arm(&self->ring, self->producer);
    rg_leave(self);
    return PyBool_FromLong(ready);
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
    rg_maybe_free(self);
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
    if (self == NULL)
        return NULL;
    self->w.wait_fd = self->w.wake_fd = self->w.alive_fd = -1;
    self->w.interrupt = &self->interrupt;
    self->max_message = DEFAULT_MAX_MESSAGE;
    self->max_send = UINT64_MAX;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    PyThread_acquire_lock(self->lock, WAIT_LOCK); /* held: waiters sleep until handed a token */
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
    if (pol != IPCW_SPIN && wait_fd < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "the 'park' and 'hybrid' policies need a wait_fd (a socket or an eventfd)");
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
        rg_raise(ipcw_RemoteProtocolError, self, NULL,
                   "%U: cannot attach to the shared-memory ring: %s", self->name, why);
        return -1;
    }
    self->w.policy = pol;
    self->w.spin_ns = spin_ns;
    self->max_message = max_message;
    /* an eventfd is read without blocking after ppoll; a socket is parked on in a blocking
     * recv (and the file status flags are shared with the caller's copy: leave them) */
    self->w.wait_sock = ipcw_is_socket(wait_fd);
    self->w.wake_sock = ipcw_is_socket(wake_fd);
    if ((self->w.wait_fd = dup_fd(wait_fd, !self->w.wait_sock)) == -2 ||
        (self->w.wake_fd = dup_fd(wake_fd, 0)) == -2 ||
        (self->w.alive_fd = dup_fd(alive_fd, 0)) == -2) {
        self->closed = 1;
        if (self->w.wait_fd == -2)
            self->w.wait_fd = -1;
        if (self->w.wake_fd == -2)
            self->w.wake_fd = -1;
        self->w.alive_fd = self->w.alive_fd == -2 ? -1 : self->w.alive_fd;
        rg_maybe_free(self);
        return -1;
    }
    return 0;
}

static int Ring_traverse(RingObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handed);
    Py_VISIT(self->partial);
    Py_VISIT(self->name);
    Py_VISIT(self->on_end);
    return 0;
}

static int Ring_clear(RingObject *self)
{
    Py_CLEAR(self->handed);
    Py_CLEAR(self->partial);
    Py_CLEAR(self->on_end);
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
    rg_maybe_free(self);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
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
    self->max_message = v > (unsigned long long)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : v;
    return 0;
}

static PyObject *Ring_get_max_send(RingObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->max_send);
}

static int Ring_set_max_send(RingObject *self, PyObject *value, void *c)
{
    (void)c;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete max_send");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    self->max_send = v;
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

static PyObject *Ring_get_on_end(RingObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->on_end != NULL ? self->on_end : Py_None);
}

static int Ring_set_on_end(RingObject *self, PyObject *value, void *c)
{
    (void)c;
    if (value == Py_None)
        value = NULL;
    if (value != NULL && !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "on_end must be a callable or None");
        return -1;
    }
    Py_XSETREF(self->on_end, Py_XNewRef(value));
    return 0;
}

static PyGetSetDef Ring_getset[] = {
    {"capacity", (getter)Ring_get_capacity, NULL, "data bytes in the ring", NULL},
    {"max_record", (getter)Ring_get_max_record, NULL, "largest loan (the capacity less 16)",
     NULL},
    {"role", (getter)Ring_get_role, NULL, "'producer' or 'consumer'", NULL},
    {"closed", (getter)Ring_get_closed, NULL, "close() was called", NULL},
    {"policy", (getter)Ring_get_policy, (setter)Ring_set_policy, "'spin', 'park' or 'hybrid'",
     NULL},
    {"spin_ns", (getter)Ring_get_spin_ns, (setter)Ring_set_spin_ns,
     "how long 'hybrid' spins before parking", NULL},
    {"max_message", (getter)Ring_get_max_message, (setter)Ring_set_max_message,
     "largest message accepted (consumer)", NULL},
    {"max_send", (getter)Ring_get_max_send, (setter)Ring_set_max_send,
     "largest message sent (producer; the peer's max_frame)", NULL},
    {"messages", (getter)Ring_get_messages, NULL, "messages sent or received", NULL},
    {"nbytes", (getter)Ring_get_nbytes, NULL, "payload bytes sent or received", NULL},
    {"buffered", (getter)Ring_get_buffered, NULL, "bytes in the ring not yet consumed", NULL},
    {"broken", (getter)Ring_get_broken, NULL, "corrupt, or a send stopped mid-message", NULL},
    {"on_end", (getter)Ring_get_on_end, (setter)Ring_set_on_end,
     "None, or on_end(error) -> the error to raise when the peer went away or closed its end",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FAST (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef Ring_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Ring_send, FAST, "send(data, timeout=None)"},
    {"send_many", (PyCFunction)(void (*)(void))Ring_send_many, FAST,
     "send_many(items, timeout=None)"},
    {"send_some", (PyCFunction)(void (*)(void))Ring_send_some, FAST,
     "send_some(data, offset=0) -> offset reached (-1: nothing written)"},
    {"loan", (PyCFunction)(void (*)(void))Ring_loan, FAST, "loan(size, timeout=None)"},
    {"commit", (PyCFunction)(void (*)(void))Ring_commit, FAST, "commit(size=None)"},
    {"abort", (PyCFunction)Ring_abort, METH_NOARGS, "abort the active loan"},
    {"recv", (PyCFunction)(void (*)(void))Ring_recv, FAST, "recv(timeout=None)"},
    {"recv_many", (PyCFunction)(void (*)(void))Ring_recv_many, FAST,
     "recv_many(max_messages=0, timeout=None)"},
    {"view", (PyCFunction)(void (*)(void))Ring_view, FAST, "view(timeout=None)"},
    {"release_view", (PyCFunction)Ring_release_view, METH_NOARGS, "release the active view"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "close this end"},
    {"abandon", (PyCFunction)Ring_abandon, METH_NOARGS,
     "close this end without marking it closed: the peer sees it go away"},
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
