/* ipcwire shared-memory ring: the lock-free single-producer/single-consumer operations.
 *
 * Memory ordering (C11):
 *   - the producer writes a record (plain stores), then stores tail with release semantics;
 *     the consumer loads tail with acquire semantics before reading the record;
 *   - the consumer stores head with release semantics after it is done with a record; the
 *     producer loads head with acquire semantics before overwriting that space;
 *   - parking is a Dekker pattern: the waiter stores its "waiting" flag and then re-reads the
 *     peer's index; the peer stores its index and then reads the flag. Both pairs are seq_cst,
 *     so at least one side sees the other: either the waiter sees the new index and does not
 *     sleep, or the peer sees the flag and rings the doorbell (a byte on a Unix socket, or an
 *     eventfd write). No wake-up is ever lost, and
 *     the peer makes the system call only when the waiter is really parked.
 *
 * Every value read from shared memory is validated before use, because the peer may be buggy
 * or hostile: indices must be monotonic, 16-byte aligned and within one capacity of each
 * other; a record must lie inside the written bytes and must not run past the end of the data
 * area. Record headers are read once (volatile) into locals, so a peer changing them while we
 * look cannot make us read outside the ring. A failed check sets `corrupt` for good.
 */
#define _GNU_SOURCE
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ALIVE_CHECK_NS 1000000     /* spinning: ask the kernel whether the peer lives, each ms */
/* A timed park sleeps in the doorbell's recv() first, as an untimed one does, when its
 * deadline is further away than this: the recv gives up after SO_RCVTIMEO (10 ms, set at
 * setup; shm/_setup.py PARK_RECHECK_US), which the kernel counts in timer ticks (4 ms at
 * HZ=250, 10 ms at HZ=100), so it could end up to ~30 ms late; then ppoll() waits for the
 * rest to the nanosecond. ppoll() with a timeout costs a wake-up more than the recv here
 * (its hrtimer, two sockets' wait queues and the read of the byte after it: 3-5 us of a 20 us
 * round trip on a KVM guest), and request() always has a timeout. */
#define RECV_FIRST_NS 50000000
#define SPIN_SLICE_NS 50000000     /* spinning: hand back to Python (signals) every 50 ms */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

int64_t ipcw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int fail(ipcw_ring *r, const char *why)
{
    r->corrupt = 1;
    r->why = why;
    return IPCW_CORRUPT;
}

/* Record headers: written with plain stores (published by the release store of tail) and
 * read once through volatile pointers. */
static inline void put_hdr(unsigned char *p, uint64_t len, uint32_t kind, uint64_t aux)
{
    uint32_t l = (uint32_t)len;
    memcpy(p, &l, 4);
    memcpy(p + 4, &kind, 4);
    memcpy(p + 8, &aux, 8);
}

void ipcw_init(void *base, uint64_t capacity)
{
    struct ipcw_header *h = base;
    memset(h, 0, sizeof *h);
    h->magic = IPCW_MAGIC;
    h->version = IPCW_VERSION;
    h->header_size = IPCW_HEADER_SIZE;
    h->capacity = capacity;
    atomic_store_explicit(&h->tail, 0, memory_order_relaxed);
    atomic_store_explicit(&h->head, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
}

int ipcw_attach(ipcw_ring *r, void *base, uint64_t avail, int producer)
{
    memset(r, 0, sizeof *r);
    if (avail < IPCW_HEADER_SIZE)
        return fail(r, "the region is smaller than a ring header (512 bytes)");
    struct ipcw_header *h = base;
    volatile struct ipcw_header *vh = h;
    uint64_t magic = vh->magic, cap = vh->capacity;
    uint32_t version = vh->version, header_size = vh->header_size;
    if (magic != IPCW_MAGIC)
        return fail(r, "bad magic: this memory does not hold an ipcwire ring");
    if (version != IPCW_VERSION)
        return fail(r, "unsupported ring layout version (the peer runs another ipcwire)");
    if (header_size != IPCW_HEADER_SIZE)
        return fail(r, "bad header size");
    if (cap < IPCW_MIN_CAPACITY || cap > IPCW_MAX_CAPACITY || (cap & (cap - 1)) != 0)
        return fail(r, "bad capacity: not a power of two from 4 KiB to 4 GiB");
    if (cap > avail - IPCW_HEADER_SIZE)
        return fail(r, "the capacity in the header is larger than the shared region");
    uint64_t t = atomic_load_explicit(&h->tail, memory_order_acquire);
    uint64_t hd = atomic_load_explicit(&h->head, memory_order_acquire);
    if (t < hd || t - hd > cap || ((t | hd) & (IPCW_ALIGN - 1)) != 0)
        return fail(r, "head/tail indices out of range");
    r->hdr = h;
    r->data = (unsigned char *)base + IPCW_HEADER_SIZE;
    r->cap = cap;
    r->mask = cap - 1;
    r->pos = r->pub = producer ? t : hd;
    r->peer = producer ? hd : t;
    return IPCW_OK;
}

/* ---- producer ------------------------------------------------------------------------ */

static int refresh_head(ipcw_ring *r)
{
    uint64_t h = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
    if (h < r->peer || h > r->pub || (h & (IPCW_ALIGN - 1)) != 0)
        return fail(r, "the consumer's head index is out of range");
    r->peer = h;
    return IPCW_OK;
}

static inline uint64_t free_bytes(const ipcw_ring *r) { return r->cap - (r->pos - r->peer); }

uint64_t ipcw_need(const ipcw_ring *r, uint64_t n)
{
    uint64_t rec = ipcw_align(IPCW_REC_HDR + n), contig = r->cap - (r->pos & r->mask);
    return contig < rec ? contig : rec;
}

/* Find room for a record with n payload bytes at the private tail. May write a PAD record
 * (unpublished) to skip the end of the data area. */
int ipcw_reserve(ipcw_ring *r, uint64_t n, unsigned char **payload)
{
    if (r->corrupt)
        return IPCW_CORRUPT;
    if (atomic_load_explicit(&r->hdr->consumer_closed, memory_order_relaxed))
        return IPCW_PEER_CLOSED;
    uint64_t rec = ipcw_align(IPCW_REC_HDR + n);
    uint64_t off = r->pos & r->mask, contig = r->cap - off;
    if (contig < rec) {
        if (free_bytes(r) < contig) {
            if (refresh_head(r) != IPCW_OK)
                return IPCW_CORRUPT;
            if (free_bytes(r) < contig)
                return IPCW_AGAIN;
        }
        put_hdr(r->data + off, 0, IPCW_PAD, 0);
        r->pos += contig;
        off = 0;
    }
    if (free_bytes(r) < rec) {
        if (refresh_head(r) != IPCW_OK)
            return IPCW_CORRUPT;
        if (free_bytes(r) < rec)
            return IPCW_AGAIN;
    }
    *payload = r->data + off + IPCW_REC_HDR;
    return IPCW_OK;
}

void ipcw_finish(ipcw_ring *r, uint64_t n, uint32_t kind, uint64_t aux)
{
    put_hdr(r->data + (r->pos & r->mask), n, kind, aux);
    r->pos += ipcw_align(IPCW_REC_HDR + n);
}

/* Make everything written visible. Returns 1 when the consumer is parked (wake it).
 *
 * The waker takes the flag (exchange to 0): one doorbell per park, however many messages are
 * published before the parked side runs again (it sets the flag anew before it sleeps again).
 * A plain load would ring on every publish meanwhile: with a fast producer, dozens of
 * doorbells per wake-up, each a system call. */
int ipcw_publish(ipcw_ring *r)
{
    if (r->pos == r->pub)
        return 0;
    atomic_store_explicit(&r->hdr->tail, r->pos, memory_order_seq_cst);
    r->pub = r->pos;
    if (!atomic_load_explicit(&r->hdr->consumer_waiting, memory_order_seq_cst))
        return 0;
    return atomic_exchange_explicit(&r->hdr->consumer_waiting, 0, memory_order_seq_cst) != 0;
}

/* ---- consumer ------------------------------------------------------------------------ */

static int refresh_tail(ipcw_ring *r)
{
    uint64_t t = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
    if (t < r->peer || t - r->pos > r->cap || (t & (IPCW_ALIGN - 1)) != 0)
        return fail(r, "the producer's tail index is out of range");
    r->peer = t;
    return IPCW_OK;
}

/* The next record, validated, without consuming it (PAD records are consumed here). */
int ipcw_peek(ipcw_ring *r, ipcw_rec *rec)
{
    if (r->corrupt)
        return IPCW_CORRUPT;
    for (;;) {
        uint64_t avail = r->peer - r->pos;
        if (avail == 0) {
            if (refresh_tail(r) != IPCW_OK)
                return IPCW_CORRUPT;
            avail = r->peer - r->pos;
            if (avail == 0)
                return IPCW_AGAIN;
        }
        /* avail >= 16 and off <= cap - 16: both indices are multiples of 16 */
        uint64_t off = r->pos & r->mask;
        unsigned char *p = r->data + off;
        uint32_t len = *(volatile uint32_t *)p;
        uint32_t kind = *(volatile uint32_t *)(p + 4);
        uint64_t aux = *(volatile uint64_t *)(p + 8);
        if (kind == IPCW_PAD) {
            if (off == 0) /* a producer pads only the end of a lap: one pad per lap at most */
                return fail(r, "a padding record at the start of the ring");
            if (r->cap - off > avail)
                return fail(r, "a padding record covers bytes that were never written");
            r->pos += r->cap - off;
            continue;
        }
        if (kind > IPCW_LAST)
            return fail(r, "unknown record kind");
        uint64_t size = ipcw_align(IPCW_REC_HDR + (uint64_t)len);
        if (size > r->cap - off)
            return fail(r, "a record runs past the end of the ring");
        if (size > avail)
            return fail(r, "a record is longer than the bytes written");
        rec->payload = p + IPCW_REC_HDR;
        rec->len = len;
        rec->kind = kind;
        rec->aux = aux;
        rec->size = size;
        return IPCW_OK;
    }
}

void ipcw_consume(ipcw_ring *r, const ipcw_rec *rec) { r->pos += rec->size; }

/* Give consumed space back. Returns 1 when the producer is parked and now has the room it
 * waits for (wake it). */
int ipcw_release(ipcw_ring *r)
{
    if (r->pos == r->pub)
        return 0;
    atomic_store_explicit(&r->hdr->head, r->pos, memory_order_seq_cst);
    r->pub = r->pos;
    if (!atomic_load_explicit(&r->hdr->producer_waiting, memory_order_seq_cst))
        return 0;
    uint64_t need = atomic_load_explicit(&r->hdr->producer_need, memory_order_relaxed);
    uint64_t used = atomic_load_explicit(&r->hdr->tail, memory_order_acquire) - r->pos;
    if (used <= r->cap && r->cap - used < need) /* (nonsense values: wake, let it check) */
        return 0;
    /* take the flag, as ipcw_publish does: one doorbell per park */
    return atomic_exchange_explicit(&r->hdr->producer_waiting, 0, memory_order_seq_cst) != 0;
}

/* Consumer: bytes published and not yet consumed, read fresh (0 if the index is nonsense). */
uint64_t ipcw_used(ipcw_ring *r)
{
    if (r->corrupt)
        return 0;
    uint64_t used = atomic_load_explicit(&r->hdr->tail, memory_order_acquire) - r->pos;
    return used > r->cap ? 0 : used;
}

void ipcw_mark_closed(ipcw_ring *r, int producer)
{
    if (r->hdr == NULL)
        return;
    atomic_store_explicit(producer ? &r->hdr->producer_closed : &r->hdr->consumer_closed, 1,
                          memory_order_seq_cst);
}

/* ---- waiting ------------------------------------------------------------------------- */

void ipcw_signal(int fd, int sock)
{
    uint64_t one = 1;
    ssize_t rc;
    if (fd < 0)
        return;
    do
        rc = sock ? send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL) : write(fd, &one, sizeof one);
    while (rc < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, or the socket's buffer is full of doorbell bytes, so
     * a wake-up is pending anyway; EPIPE, ECONNRESET: the peer's end is gone or shut */
}

/* Wake a thread of ours parked on w->wait_fd (close() from another thread; the interrupt
 * flag is already set). A socket is shut for reading: its recv() returns 0 at once, now and
 * from then on (only this ring parks on it; this side still sends on it for the other ring). */
void ipcw_wake_self(const ipcw_waiter *w)
{
    if (w->wait_fd < 0)
        return;
    if (w->wait_sock)
        shutdown(w->wait_fd, SHUT_RD);
    else
        ipcw_signal(w->wait_fd, 0);
}

int ipcw_is_socket(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Read what woke us: doorbell bytes (up to 64 at once) or the eventfd's counter. 0: the
 * socket's peer end is gone, or this side shut it (close); 1 otherwise. */
static int drain(const ipcw_waiter *w)
{
    unsigned char buf[64];
    ssize_t rc;
    do
        rc = w->wait_sock ? recv(w->wait_fd, buf, sizeof buf, MSG_DONTWAIT)
                          : read(w->wait_fd, buf, 8);
    while (rc < 0 && errno == EINTR);
    return rc != 0;
}

/* 0 when the peer's end of the liveness socket is gone (hung up, error, or readable: after
 * the handshake the peer never writes to it, so readable means EOF). */
int ipcw_peer_alive(int fd)
{
    if (fd < 0)
        return 1;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    int n;
    do
        n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    return n <= 0 || p.revents == 0;
}

static int data_ready(ipcw_ring *r, uint64_t need)
{
    (void)need;
    if (atomic_load_explicit(&r->hdr->tail, memory_order_seq_cst) != r->pos)
        return 1;
    return atomic_load_explicit(&r->hdr->producer_closed, memory_order_acquire) != 0;
}

static int space_ready(ipcw_ring *r, uint64_t need)
{
    uint64_t h = atomic_load_explicit(&r->hdr->head, memory_order_seq_cst);
    if (h > r->pos || r->pos - h > r->cap) /* nonsense: let reserve() report it */
        return 1;
    if (r->cap - (r->pos - h) >= need)
        return 1;
    return atomic_load_explicit(&r->hdr->consumer_closed, memory_order_acquire) != 0;
}

int ipcw_ready(ipcw_ring *r, int producer, uint64_t need)
{
    return producer ? space_ready(r, need) : data_ready(r, need);
}

/* Spin up to `ns` nanoseconds for `ready` (no system call, no fd). 1: ready. */
int ipcw_spin_ready(ipcw_ring *r, int producer, uint64_t need, int64_t ns)
{
    int (*ready)(ipcw_ring *, uint64_t) = producer ? space_ready : data_ready;
    int64_t until = ipcw_now_ns() + ns;
    for (unsigned i = 1;; i++) {
        if (ready(r, need))
            return 1;
        cpu_relax();
        if ((i & 15) == 0 && ipcw_now_ns() >= until)
            return 0;
    }
}

/* Park announcement for event loops: set the waiting flag, then re-check. Returns 1 when
 * already ready (flag cleared again: do not wait), 0 when the caller must wait for wait_fd. */
int ipcw_arm(ipcw_ring *r, int producer)
{
    _Atomic uint32_t *flag = producer ? &r->hdr->producer_waiting : &r->hdr->consumer_waiting;
    atomic_store_explicit(flag, 1, memory_order_seq_cst);
    if (producer ? space_ready(r, atomic_load_explicit(&r->hdr->producer_need,
                                                        memory_order_relaxed))
                 : data_ready(r, 0)) {
        atomic_store_explicit(flag, 0, memory_order_relaxed);
        return 1;
    }
    return 0;
}

void ipcw_disarm(ipcw_ring *r, int producer)
{
    atomic_store_explicit(producer ? &r->hdr->producer_waiting : &r->hdr->consumer_waiting, 0,
                          memory_order_relaxed);
}

/* Wait until `ready` holds (spin, park or spin-then-park), the deadline passes (< 0: never),
 * the peer goes away, or this side is interrupted. IPCW_OK means "look again": it does not
 * promise that the next operation succeeds. IPCW_AGAIN: a spin slice ended (the caller checks
 * signals and calls again). */
static int wait_for(ipcw_ring *r, int producer, uint64_t need, const ipcw_waiter *w,
                    int64_t deadline)
{
    int (*ready)(ipcw_ring *, uint64_t) = producer ? space_ready : data_ready;
    int64_t now = ipcw_now_ns();
    int64_t spin_until = w->policy == IPCW_PARK     ? now
                         : w->policy == IPCW_SPIN   ? now + SPIN_SLICE_NS
                                                    : now + w->spin_ns;
    int64_t next_alive = now + ALIVE_CHECK_NS;

    if (spin_until > now) {
        for (unsigned i = 1;; i++) {
            if (ready(r, need))
                return IPCW_OK;
            if (atomic_load_explicit(w->interrupt, memory_order_relaxed))
                return IPCW_INTERRUPTED;
            cpu_relax();
            if ((i & 63) == 0) {
                now = ipcw_now_ns();
                if (deadline >= 0 && now >= deadline)
                    return IPCW_TIMEOUT;
                if (now >= next_alive) {
                    next_alive = now + ALIVE_CHECK_NS;
                    if (!ipcw_peer_alive(w->alive_fd))
                        return ready(r, need) ? IPCW_OK : IPCW_PEER_GONE;
                }
                if (now >= spin_until) {
                    if (w->policy == IPCW_SPIN)
                        return IPCW_AGAIN;
                    break;
                }
            }
        }
    }

    _Atomic uint32_t *flag = producer ? &r->hdr->producer_waiting : &r->hdr->consumer_waiting;
    if (producer)
        atomic_store_explicit(&r->hdr->producer_need, need, memory_order_relaxed);
    for (;;) {
        atomic_store_explicit(flag, 1, memory_order_seq_cst);
        if (ready(r, need)) {
            atomic_store_explicit(flag, 0, memory_order_relaxed);
            return IPCW_OK;
        }
        if (atomic_load_explicit(w->interrupt, memory_order_relaxed)) {
            atomic_store_explicit(flag, 0, memory_order_relaxed);
            return IPCW_INTERRUPTED;
        }
        if (w->wait_sock && (deadline < 0 || deadline - ipcw_now_ns() > RECV_FIRST_NS)) {
            /* untimed, or the deadline far: sleep in recv() itself, one system call to sleep
             * and be woken */
            unsigned char buf[64];
            ssize_t n = recv(w->wait_fd, buf, sizeof buf, 0);
            int err = errno;
            atomic_store_explicit(flag, 0, memory_order_relaxed);
            if (atomic_load_explicit(w->interrupt, memory_order_relaxed))
                return IPCW_INTERRUPTED;
            if (n > 0)
                continue;
            if (n == 0) /* the peer's end is gone: whatever it published is still delivered */
                return ready(r, need) ? IPCW_OK : IPCW_PEER_GONE;
            if (err == EINTR)
                return IPCW_AGAIN; /* the caller runs Python's signal handlers */
            if (err != EAGAIN && err != EWOULDBLOCK) {
                errno = err;
                return IPCW_SYSERR;
            }
            /* EAGAIN: the receive timeout set once at setup (SO_RCVTIMEO, 10 ms) ran out, or
             * someone made the socket non-blocking. Either way wait in ppoll below, on the
             * doorbell and the liveness socket together, until the deadline if there is one:
             * a doorbell end that more than the peer holds never hangs up, the liveness
             * socket does (docs/mechanisms/shm.md) */
            atomic_store_explicit(flag, 1, memory_order_seq_cst);
            if (ready(r, need)) {
                atomic_store_explicit(flag, 0, memory_order_relaxed);
                return IPCW_OK;
            }
        }
        struct timespec ts, *tsp = NULL;
        if (deadline >= 0) {
            int64_t left = deadline - ipcw_now_ns();
            if (left <= 0) {
                atomic_store_explicit(flag, 0, memory_order_relaxed);
                return IPCW_TIMEOUT;
            }
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            tsp = &ts;
        }
        struct pollfd fds[2] = {{w->wait_fd, POLLIN | POLLRDHUP, 0},
                                {w->alive_fd, POLLIN | POLLRDHUP, 0}};
        int n = ppoll(fds, 2, tsp, NULL);
        int err = errno;
        atomic_store_explicit(flag, 0, memory_order_relaxed);
        if (n < 0) {
            if (err == EINTR)
                return IPCW_AGAIN; /* the caller runs Python's signal handlers */
            errno = err;
            return IPCW_SYSERR;
        }
        if (atomic_load_explicit(w->interrupt, memory_order_relaxed))
            return IPCW_INTERRUPTED;
        if ((fds[0].revents && !drain(w)) || fds[1].revents)
            return ready(r, need) ? IPCW_OK : IPCW_PEER_GONE;
    }
}

int ipcw_wait_data(ipcw_ring *r, const ipcw_waiter *w, int64_t deadline)
{
    return wait_for(r, 0, 0, w, deadline);
}

int ipcw_wait_space(ipcw_ring *r, uint64_t need, const ipcw_waiter *w, int64_t deadline)
{
    return wait_for(r, 1, need, w, deadline);
}
