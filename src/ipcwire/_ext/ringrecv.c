/* ipcwire Ring (see ringobject.h): the consumer end. Long messages arrive as fragments and
 * are reassembled into one bytes object; the state survives a timeout, so the next call goes
 * on where this one stopped. */
#include "ringobject.h"

#include <string.h>

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
        rg_release(self); /* skipped pads: give the space back before sleeping */
        st = rg_wait(self, 0, deadline);
        if (st != IPCW_OK)
            return st;
    }
}

void rg_end_view(RingObject *self)
{
    if (!self->view_active)
        return;
    rg_drop_handed(self);
    self->view_active = 0;
    if (self->ring.hdr != NULL) {
        ipcw_consume(&self->ring, &self->view_rec);
        rg_release(self);
    }
}

/* After a fragment that did not end a message: a peer that never stops sending fragments
 * (empty ones, say) must not keep a timed call past its deadline, nor one that does not wait
 * past a ring's worth, each fragment counted as at least 1/64 of the ring (a real fragment
 * is a quarter ring: only a hostile peer's are counted up). The state is kept: the next call
 * goes on. */
static int more_time(RingObject *self, int64_t deadline, uint64_t *consumed, uint64_t size)
{
    uint64_t least = self->ring.cap / 64;
    *consumed += size > least ? size : least;
    if (deadline == NONBLOCK)
        return *consumed >= self->ring.cap ? IPCW_TIMEOUT : IPCW_OK;
    if (deadline >= 0 && ipcw_now_ns() >= deadline)
        return IPCW_TIMEOUT;
    return IPCW_OK;
}

/* The next whole message as bytes (fragments reassembled). */
static int get_message(RingObject *self, int64_t deadline, PyObject **out)
{
    ipcw_rec rec;
    uint64_t consumed = 0;
    for (;;) {
        int st = wait_record(self, &rec, deadline);
        if (st != IPCW_OK)
            return st;
        if (self->discarding) {
            if (rec.kind != IPCW_MIDDLE && rec.kind != IPCW_LAST)
                return rg_corrupt(self, "a skipped long message did not end with a last fragment");
            ipcw_consume(&self->ring, &rec);
            self->discarding = rec.kind != IPCW_LAST;
            rg_release(self);
            if ((st = more_time(self, deadline, &consumed, rec.size)) != IPCW_OK)
                return st;
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
                rg_copy((unsigned char *)PyBytes_AS_STRING(b), rec.payload, rec.len);
                ipcw_consume(&self->ring, &rec);
                *out = b;
                return IPCW_OK;
            }
            if (rec.kind != IPCW_FIRST)
                return rg_corrupt(self, "a continuation fragment arrived without a first fragment");
            if (rec.aux > self->max_message || rec.aux > (uint64_t)PY_SSIZE_T_MAX) {
                self->too_large = rec.aux;
                self->discarding = 1;
                ipcw_consume(&self->ring, &rec);
                return ERR_TOO_LARGE;
            }
            if (rec.len > rec.aux)
                return rg_corrupt(self, "a first fragment is longer than its whole message");
            self->partial = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rec.aux);
            if (self->partial == NULL)
                return ERR_PYTHON;
            self->partial_total = rec.aux;
            self->partial_filled = 0;
        } else if (rec.kind != IPCW_MIDDLE && rec.kind != IPCW_LAST) {
            return rg_corrupt(self, "a new message started before the previous one was complete");
        }
        if (rec.len > self->partial_total - self->partial_filled)
            return rg_corrupt(self, "fragments add up to more than the announced length");
        rg_copy((unsigned char *)PyBytes_AS_STRING(self->partial) + self->partial_filled,
             rec.payload, rec.len);
        self->partial_filled += rec.len;
        ipcw_consume(&self->ring, &rec);
        if (rec.kind == IPCW_LAST) {
            if (self->partial_filled != self->partial_total)
                return rg_corrupt(self, "the last fragment came before the announced length");
            *out = self->partial;
            self->partial = NULL;
            return IPCW_OK;
        }
        rg_release(self);
        if ((st = more_time(self, deadline, &consumed, rec.size)) != IPCW_OK)
            return st;
    }
}

/* 0: this thread has the consumer end; -1: an error is set (RG_NO_TURN: the deadline passed
 * while another thread received, a Timeout saying `timeout`). */
static int consumer_ready(RingObject *self, int64_t deadline, PyObject *timeout)
{
    int st = rg_enter(self, 0, deadline);
    if (st == RG_NO_TURN) {
        rg_fail_recv(self, IPCW_TIMEOUT, timeout, 1);
        return -1;
    }
    if (st < 0)
        return -1;
    rg_end_view(self);
    return 0;
}

PyObject *Ring_recv(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1], *out = NULL;
    int64_t deadline;
    if (rg_parse(args, nargs, kwnames, names, 1, 0, a, "recv") < 0 ||
        rg_deadline(self, a[0], &deadline) < 0 || consumer_ready(self, deadline, a[0]) < 0)
        return NULL;
    int st = get_message(self, deadline, &out);
    rg_release(self);
    if (st == IPCW_OK) {
        self->messages++;
        self->nbytes += (unsigned long long)PyBytes_GET_SIZE(out);
    }
    rg_leave(self);
    if (st != IPCW_OK)
        return rg_fail_recv(self, st, a[0], 0);
    return out;
}

PyObject *Ring_recv_many(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"max_messages", "timeout"};
    PyObject *a[2], *first = NULL;
    int64_t deadline;
    Py_ssize_t max = 0;
    if (rg_parse(args, nargs, kwnames, names, 2, 0, a, "recv_many") < 0 ||
        rg_deadline(self, a[1], &deadline) < 0)
        return NULL;
    if (a[0] != NULL && a[0] != Py_None) {
        max = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
        if (max == -1 && PyErr_Occurred())
            return NULL;
    }
    if (consumer_ready(self, deadline, a[1]) < 0)
        return NULL;
    int st = get_message(self, deadline, &first);
    PyObject *list = st == IPCW_OK ? PyList_New(1) : NULL;
    if (list == NULL) {
        Py_XDECREF(first);
        rg_release(self);
        rg_leave(self);
        return st == IPCW_OK ? NULL : rg_fail_recv(self, st, a[1], 0);
    }
    PyList_SET_ITEM(list, 0, first);
    unsigned long long count = 1, nbytes = (unsigned long long)PyBytes_GET_SIZE(first);
    uint64_t batch = self->ring.cap / 8, start = self->ring.pos;
    ipcw_rec rec;
    /* at most a ring's worth more: a peer that never stops sending cannot keep this going */
    while ((max <= 0 || (Py_ssize_t)count < max) && self->ring.pos - start < self->ring.cap) {
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
        rg_copy((unsigned char *)PyBytes_AS_STRING(b), rec.payload, rec.len);
        Py_DECREF(b);
        ipcw_consume(&self->ring, &rec);
        count++;
        nbytes += rec.len;
        if (self->ring.pos - self->ring.pub >= batch)
            rg_release(self);
        if ((count & 1023) == 0 && deadline >= 0 && ipcw_now_ns() >= deadline)
            break; /* (a ring's worth of empty messages can take a while) */
    }
    rg_release(self);
    self->messages += count;
    self->nbytes += nbytes;
    rg_leave(self);
    return list;
}

PyObject *Ring_view(RingObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1], *out = NULL;
    int64_t deadline;
    ipcw_rec rec;
    if (rg_parse(args, nargs, kwnames, names, 1, 0, a, "view") < 0 ||
        rg_deadline(self, a[0], &deadline) < 0 || consumer_ready(self, deadline, a[0]) < 0)
        return NULL;
    int st = wait_record(self, &rec, deadline);
    if (st == IPCW_OK && rec.kind == IPCW_MSG && self->partial == NULL && !self->discarding) {
        if (rec.len > self->max_message) {
            self->too_large = rec.len;
            ipcw_consume(&self->ring, &rec);
            rg_release(self);
            rg_leave(self);
            return rg_fail(self, ERR_TOO_LARGE, 0);
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
        rg_leave(self);
        return out;
    }
    if (st == IPCW_OK) { /* a long (fragmented) message: reassembled, so a copy */
        PyObject *b = NULL;
        st = get_message(self, deadline, &b);
        rg_release(self);
        if (st == IPCW_OK) {
            self->messages++;
            self->nbytes += (unsigned long long)PyBytes_GET_SIZE(b);
            out = PyMemoryView_FromObject(b);
            Py_DECREF(b);
            rg_leave(self);
            return out;
        }
    }
    rg_leave(self);
    return rg_fail_recv(self, st, a[0], 0);
}

PyObject *Ring_release_view(RingObject *self, PyObject *unused)
{
    (void)unused;
    if (self->closed || self->producer || !self->view_active)
        Py_RETURN_NONE;
    if (rg_enter(self, 0, FOREVER) < 0)
        return NULL;
    rg_end_view(self);
    rg_leave(self);
    Py_RETURN_NONE;
}

