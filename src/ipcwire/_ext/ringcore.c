/* ipcwire Ring (see ringobject.h): errors, arguments, lifetime, serialisation, waiting. */
#include "ringobject.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

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

void rg_raise(PyObject *cls, RingObject *self, PyObject *extra, const char *fmt, ...)
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

void rg_raise_too_large(RingObject *self, uint64_t size, uint64_t limit, const char *fmt)
{
    PyObject *kw = Py_BuildValue("{s:K,s:K}", "size", (unsigned long long)size, "limit",
                                 (unsigned long long)limit);
    if (kw != NULL)
        rg_raise(ipcw_FrameTooLarge, self, kw, fmt, self->name, (unsigned long long)size,
                   (unsigned long long)limit);
}

/* The peer's end (it went away, or closed its end): the error is set; the on_end hook (set
 * from Python: it knows what else the peer said) may give the one to raise instead. */
static void end_hook(RingObject *self)
{
    if (self->on_end == NULL)
        return;
    PyObject *exc = take_error();
    if (exc == NULL)
        return;
    PyObject *hook = Py_NewRef(self->on_end);
    PyObject *got = PyObject_CallOneArg(hook, exc);
    Py_DECREF(hook);
    if (got == NULL) { /* the hook raised: that propagates */
        Py_DECREF(exc);
        return;
    }
    if (PyExceptionInstance_Check(got)) {
        Py_DECREF(exc);
        restore_error(got);
    } else {
        Py_DECREF(got);
        restore_error(exc);
    }
}

PyObject *rg_fail(RingObject *self, int st, int partial)
{
    if (self->closed && st != ERR_PYTHON)
        st = IPCW_INTERRUPTED; /* this side closed during the call: Closed wins */
    switch (st) {
    case ERR_PYTHON:
        break;
    case IPCW_CORRUPT:
        rg_raise(ipcw_RemoteProtocolError, self, NULL,
                   "%U: the shared-memory ring is corrupt (%s); the peer is buggy or hostile, "
                   "or something else wrote into the segment. Close the channel and reconnect",
                   self->name, self->ring.why ? self->ring.why : "?");
        break;
    case IPCW_TIMEOUT:
        if (self->producer && partial)
            rg_raise(ipcw_Timeout, self, NULL,
                       "send to %U timed out part-way through a long message (the peer is not "
                       "reading); the channel cannot be used for sending any more",
                       self->name);
        else if (self->producer)
            rg_raise(ipcw_Timeout, self, NULL,
                       "send to %U timed out: the ring is full and the peer is not reading; "
                       "nothing was sent",
                       self->name);
        else
            rg_raise(ipcw_Timeout, self, NULL, "no message from %U within the timeout",
                       self->name);
        break;
    case IPCW_PEER_GONE:
        rg_raise(ipcw_ChannelBroken, self, NULL,
                   "the peer of %U went away without closing the channel (its process exited "
                   "or was killed)%s",
                   self->name,
                   self->partial ? "; a partly received message was discarded" : "");
        end_hook(self);
        break;
    case IPCW_INTERRUPTED:
        rg_raise(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
        break;
    case IPCW_PEER_CLOSED:
        if (self->producer)
            rg_raise(ipcw_ChannelBroken, self, NULL,
                       "the peer closed %U, so nothing more can be sent", self->name);
        else if (self->partial != NULL || self->discarding)
            rg_raise(ipcw_ChannelBroken, self, NULL,
                       "%U closed in the middle of a message; the partial message was "
                       "discarded",
                       self->name);
        else
            rg_raise(ipcw_EndOfChannel, self, NULL, "%U: the peer closed its end",
                       self->name);
        end_hook(self);
        break;
    case IPCW_SYSERR: {
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *cause = take_error();
        rg_raise(ipcw_ChannelBroken, self, NULL, "%U broke: %S", self->name, cause);
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
        rg_raise_too_large(self, self->too_large, self->max_message,
                        "%U: a message of %llu bytes arrived, over max_frame=%llu; it was "
                        "skipped. Raise max_frame= on this side");
        break;
    default:
        PyErr_Format(PyExc_SystemError, "ipcwire ring: unexpected status %d", st);
    }
    return NULL;
}

/* A receive's failure: its Timeout says the timeout it was given, as every mechanism's
 * ("no message from URL within 0.5 s", "... yet" for 0); `no_turn`: the time went by while
 * another thread received. The other failures are rg_fail's. Only failures come here, so the
 * timeout is looked at again only then. */
PyObject *rg_fail_recv(RingObject *self, int st, PyObject *timeout, int no_turn)
{
    if (st != IPCW_TIMEOUT || self->closed || timeout == NULL || timeout == Py_None)
        return rg_fail(self, st, 0);
    const char *meanwhile =
        no_turn ? ": another thread was receiving on this channel meanwhile (receives take turns)"
                : "";
    double t = PyFloat_AsDouble(timeout); /* (it was one: rg_deadline took it) */
    if (t <= 0)
        rg_raise(ipcw_Timeout, self, NULL, "no message from %U yet%s", self->name, meanwhile);
    else
        rg_raise(ipcw_Timeout, self, NULL, "no message from %U within %S s%s", self->name,
                 timeout, meanwhile);
    return NULL;
}

int rg_corrupt(RingObject *self, const char *why)
{
    self->ring.corrupt = 1;
    self->ring.why = why;
    return IPCW_CORRUPT;
}

/* ---- argument helpers ---------------------------------------------------------------------- */

int rg_parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
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

int rg_deadline(RingObject *self, PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = FOREVER;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (t != t) { /* the words of ipcwire._deadline.not_a_number(), as every mechanism's */
        rg_raise(ipcw_ConfigurationError, self, NULL,
                 "timeout=nan for %U is not a number of seconds: give seconds (0 does not "
                 "wait) or None to wait without a limit",
                 self->name);
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

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Release fds and the mapping once nothing uses them any more. */
void rg_maybe_free(RingObject *self)
{
    if (!self->closed || self->in_use)
        return;
    Py_CLEAR(self->partial);
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
void rg_drop_handed(RingObject *self)
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

/* Take this end for one call. in_use is only read and written with the GIL held, so the
 * uncontended case costs nothing. A thread that finds the end in use (its holder waits with
 * the GIL released) sleeps on `lock`, which is kept acquired: a leaving holder releases it
 * once per waiter, handing over a token; the woken waiter checks again. Calls are thus
 * serialised, each waiting within its own deadline (threads receiving from one channel take
 * turns, as on every blocking mechanism: the conformance suite's "threads receiving at
 * once"). Returns 0 (entered), -1 (an error is set) or RG_NO_TURN: the deadline passed while
 * another thread's call ran; the caller raises its own Timeout (a consumer's says which
 * timeout, as every receive's does: rg_fail_recv). */
int rg_enter(RingObject *self, int producer, int64_t deadline)
{
    if (self->closed) {
        rg_raise(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
        return -1;
    }
    if (self->producer != producer) {
        rg_raise(ipcw_LocalProtocolError, self, NULL, "this end of the ring of %U can only %s",
                 self->name, self->producer ? "send" : "receive");
        return -1;
    }
    while (self->in_use) {
        PY_TIMEOUT_T us = -1;
        if (deadline == NONBLOCK) {
            us = 0;
        } else if (deadline >= 0) {
            int64_t left = deadline - ipcw_now_ns();
            us = left > 0 ? (PY_TIMEOUT_T)(left / 1000) : 0;
        }
        PyLockStatus got = PY_LOCK_FAILURE;
        if (us != 0) {
            self->waiters++;
            Py_BEGIN_ALLOW_THREADS
            got = PyThread_acquire_lock_timed(self->lock, us, 1);
            Py_END_ALLOW_THREADS
            self->waiters--;
        }
        if (got == PY_LOCK_INTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (got == PY_LOCK_FAILURE) {
            if (!producer)
                return RG_NO_TURN;
            rg_raise(ipcw_Timeout, self, NULL,
                     "send to %U timed out: another thread's send on this channel did not "
                     "finish in time (sends take turns); nothing was sent",
                     self->name);
            return -1;
        }
        if (self->closed) { /* closed while we waited for the other thread */
            /* the token this waiter took is passed on: every waiter must wake and see it
             * closed, not only the one the leaving holder's token woke */
            if (self->waiters > 0)
                PyThread_release_lock(self->lock);
            rg_raise(ipcw_ChannelClosed, self, NULL, "%U is closed", self->name);
            return -1;
        }
    }
    self->in_use = 1;
    return 0;
}

void rg_leave(RingObject *self)
{
    self->in_use = 0;
    if (self->waiters > 0)
        PyThread_release_lock(self->lock); /* a token for one waiter */
    rg_maybe_free(self);
}

/* ---- waiting ------------------------------------------------------------------------------- */

int rg_wait(RingObject *self, uint64_t need, int64_t deadline)
{
    /* The peer usually answers within microseconds: look for that with the GIL held, since
     * releasing and taking it back costs a good part of a round trip. */
    if (self->w.policy != IPCW_PARK && deadline != NONBLOCK) {
        int64_t ns = self->w.policy == IPCW_HYBRID && self->w.spin_ns < PRESPIN_NS
                         ? self->w.spin_ns
                         : PRESPIN_NS;
        if (ns > 0 && ipcw_spin_ready(&self->ring, self->producer, need, ns))
            return IPCW_OK;
    }
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

void rg_copy(unsigned char *dst, const unsigned char *src, uint64_t n)
{
    if (n >= BIG_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(dst, src, n);
    }
}

