/* ipcwire._ext._native.Ring: one end (producer or consumer) of a shared-memory ring.
 *
 * The Python face of ring.c, in four files:
 *   ringcore.c    errors, arguments, lifetime, serialisation of callers, waiting
 *   ringsend.c    the producer: send, send_many, send_some, loan/commit/abort
 *   ringrecv.c    the consumer: recv, recv_many, view/release_view (fragments reassembled)
 *   ringobject.c  close, arm/disarm, the buffer protocol, construction, attributes, the type
 *
 * The policy (which fds, which wait policy, naming, handshakes) lives in Python, in
 * ipcwire.shm.
 *
 * Lifetime: the Ring holds a buffer export of the mapping (so it cannot be unmapped under
 * it) and its own duplicates of the eventfds and the liveness socket. close() marks this end
 * closed in shared memory, wakes the peer and any local waiter, and releases the fds and the
 * mapping as soon as no thread is inside a call and no memoryview of a loan or view is alive;
 * until then they are kept, so no pointer ever dangles.
 *
 * Threads: calls on one end are serialised (a second sender or receiver waits for the first,
 * within its own timeout); close() never waits for them, so it always wakes a blocked call.
 */
#ifndef IPCWIRE_RINGOBJECT_H
#define IPCWIRE_RINGOBJECT_H

#include "native.h"
#include "ring.h"

#include <pythread.h>

#define IPCW_INTERNAL __attribute__((visibility("hidden")))

/* deadlines: absolute CLOCK_MONOTONIC ns, or one of these */
#define FOREVER (-1)
#define NONBLOCK (-2)

/* statuses beyond ring.h's */
#define ERR_PYTHON (-100)    /* a Python exception is set */
#define ERR_TOO_LARGE (-101) /* received a message over max_message (size in too_large) */
#define RG_NO_TURN 1         /* rg_enter: the deadline passed while another thread's call ran */

#define BIG_COPY (128 * 1024)  /* copies at least this long run without the GIL */
#define ALIVE_EVERY_NS 5000000 /* senders ask the kernel whether the peer lives, each 5 ms */
#define PRESPIN_NS 3000        /* spin/hybrid: spin this long before releasing the GIL */
#define DEFAULT_MAX_MESSAGE (64u * 1024 * 1024)

typedef struct {
    PyObject_HEAD
    ipcw_ring ring;
    ipcw_waiter w;
    _Atomic int interrupt;
    PyThread_type_lock lock;
    Py_buffer mem;
    int has_mem;
    int producer;
    int in_use;  /* a call is running on this end (read and written under the GIL) */
    int waiters; /* threads waiting for it to finish */
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
    uint64_t max_message; /* consumer: largest message accepted */
    uint64_t max_send;    /* producer: largest message sent (the peer's max_frame) */
    PyObject *name;
    PyObject *on_end; /* NULL, or called with the peer's end error; returns the one to raise */
    unsigned long long messages;
    unsigned long long nbytes;
    int64_t alive_at;
} RingObject;

/* ringcore.c */
IPCW_INTERNAL void rg_raise(PyObject *cls, RingObject *self, PyObject *extra, const char *fmt,
                            ...);
IPCW_INTERNAL void rg_raise_too_large(RingObject *self, uint64_t size, uint64_t limit,
                                      const char *fmt);
IPCW_INTERNAL PyObject *rg_fail(RingObject *self, int st, int partial);
IPCW_INTERNAL PyObject *rg_fail_recv(RingObject *self, int st, PyObject *timeout, int no_turn);
IPCW_INTERNAL int rg_corrupt(RingObject *self, const char *why);
IPCW_INTERNAL int rg_parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                           const char *const *names, Py_ssize_t nnames, Py_ssize_t nrequired,
                           PyObject **out, const char *fname);
IPCW_INTERNAL int rg_deadline(RingObject *self, PyObject *timeout, int64_t *deadline);
IPCW_INTERNAL void rg_maybe_free(RingObject *self);
IPCW_INTERNAL void rg_drop_handed(RingObject *self);
IPCW_INTERNAL int rg_enter(RingObject *self, int producer, int64_t deadline);
IPCW_INTERNAL void rg_leave(RingObject *self);
IPCW_INTERNAL int rg_wait(RingObject *self, uint64_t need, int64_t deadline);
IPCW_INTERNAL void rg_copy(unsigned char *dst, const unsigned char *src, uint64_t n);

static inline void rg_publish(RingObject *self)
{
    if (ipcw_publish(&self->ring))
        ipcw_signal(self->w.wake_fd, self->w.wake_sock);
}

static inline void rg_release(RingObject *self)
{
    if (ipcw_release(&self->ring))
        ipcw_signal(self->w.wake_fd, self->w.wake_sock);
}

/* ringsend.c */
IPCW_INTERNAL PyObject *Ring_send(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_send_many(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_send_some(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_loan(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_commit(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_abort(RingObject *, PyObject *);

/* ringrecv.c */
IPCW_INTERNAL PyObject *Ring_recv(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_recv_many(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_view(RingObject *, PyObject *const *, Py_ssize_t, PyObject *);
IPCW_INTERNAL PyObject *Ring_release_view(RingObject *, PyObject *);
IPCW_INTERNAL void rg_end_view(RingObject *self);

#endif
