/* ipcwire shared-memory ring: memory layout and the lock-free SPSC operations.
 *
 * No Python in here: ring.c is plain C11 so its logic can be read (and fuzzed) on its own.
 * docs/mechanisms/shm.md draws the layout; src/ipcwire/shm/_pyring.py implements the same
 * layout in pure Python, so the two interoperate byte for byte.
 *
 * Layout of one ring (all integers native-endian; both ends are on the same machine):
 *
 *   offset   size  written by  field
 *   0        8     creator     magic "IPCWRING"
 *   8        4     creator     version (1)
 *   12       4     creator     header size (512)
 *   16       8     creator     capacity of the data area in bytes (power of two)
 *   128      8     producer    tail: bytes ever written (monotonic, multiple of 16)
 *   256      8     consumer    head: bytes ever consumed (monotonic, multiple of 16)
 *   384      4     consumer    consumer_waiting: 1 while the consumer is parked
 *   388      4     producer    producer_waiting: 1 while the producer is parked
 *   392      4     producer    producer_closed: 1 once the producer closed cleanly (EOF)
 *   396      4     consumer    consumer_closed: 1 once the consumer closed
 *   400      8     producer    producer_need: free bytes the parked producer waits for
 *   512      cap   both        records
 *
 * tail and head live on their own 128-byte lines (two 64-byte lines: the adjacent-line
 * prefetcher pulls pairs) so the two sides never write the same line in the fast path; the
 * flags line is written only when a side parks or closes.
 *
 * A record is a 16-byte header {u32 len, u32 kind, u64 aux} followed by len payload bytes,
 * padded to a multiple of 16; records never wrap. When a record does not fit before the end
 * of the data area the producer writes a PAD record covering the rest, and continues at 0.
 * A message longer than one record is sent as FIRST (aux = total length), MIDDLE..., LAST.
 */
#ifndef IPCWIRE_RING_H
#define IPCWIRE_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IPCW_MAGIC UINT64_C(0x474e495257435049) /* "IPCWRING" as little-endian bytes */
#define IPCW_VERSION 1u
#define IPCW_HEADER_SIZE 512u
#define IPCW_REC_HDR 16u
#define IPCW_ALIGN 16u
#define IPCW_MIN_CAPACITY 4096u
#define IPCW_MAX_CAPACITY (UINT64_C(1) << 32) /* record lengths are u32 */

/* record kinds */
#define IPCW_PAD 0u
#define IPCW_MSG 1u
#define IPCW_FIRST 2u
#define IPCW_MIDDLE 3u
#define IPCW_LAST 4u

struct ipcw_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t capacity;
    unsigned char _pad0[128 - 24];
    _Atomic uint64_t tail;
    unsigned char _pad1[128 - 8];
    _Atomic uint64_t head;
    unsigned char _pad2[128 - 8];
    _Atomic uint32_t consumer_waiting;
    _Atomic uint32_t producer_waiting;
    _Atomic uint32_t producer_closed;
    _Atomic uint32_t consumer_closed;
    _Atomic uint64_t producer_need;
    unsigned char _pad3[128 - 24];
};

_Static_assert(sizeof(struct ipcw_header) == IPCW_HEADER_SIZE, "header size");
_Static_assert(offsetof(struct ipcw_header, tail) == 128, "tail offset");
_Static_assert(offsetof(struct ipcw_header, head) == 256, "head offset");
_Static_assert(offsetof(struct ipcw_header, consumer_waiting) == 384, "flags offset");
_Static_assert(offsetof(struct ipcw_header, producer_need) == 400, "need offset");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

/* status codes (0 and positive: fine; negative: the operation failed) */
enum {
    IPCW_OK = 0,
    IPCW_AGAIN = 1,        /* empty (consumer) or full (producer): wait and retry */
    IPCW_CORRUPT = -1,     /* an index or record in shared memory is impossible */
    IPCW_TIMEOUT = -2,     /* the deadline passed */
    IPCW_PEER_GONE = -3,   /* the liveness socket hung up: the peer process is gone */
    IPCW_INTERRUPTED = -4, /* this side is closing (another thread called close) */
    IPCW_PEER_CLOSED = -5, /* producer: the consumer closed; consumer: EOF */
    IPCW_SYSERR = -6,      /* a system call failed; errno says why */
};

/* One end of a ring, in private (process-local) memory. The peer's index is read from
 * shared memory and validated against these private copies; our own index is never read
 * back from shared memory. */
typedef struct {
    struct ipcw_header *hdr;
    unsigned char *data;
    uint64_t cap;
    uint64_t mask;
    uint64_t pos;      /* producer: private tail; consumer: private head */
    uint64_t pub;      /* the value of pos last stored to shared memory */
    uint64_t peer;     /* last validated value of the peer's index */
    const char *why;   /* what was corrupt */
    int corrupt;
} ipcw_ring;

/* One record seen by the consumer (a validated copy of its header). */
typedef struct {
    unsigned char *payload;
    uint32_t len;
    uint32_t kind;
    uint64_t aux;
    uint64_t size; /* bytes the record occupies, header and padding included */
} ipcw_rec;

/* How a blocked side waits. Owned by the caller; fds may be -1.
 *
 * The doorbells are either eventfds (wait_fd: ours, the peer writes it; wake_fd: the peer's)
 * or, as ipcwire's links use them, this side's ends of Unix stream socketpairs: a parked
 * waiter sleeps in one blocking recv() on wait_fd (one system call to sleep and to wake, and
 * 0 bytes = the peer's end is gone), and this side rings the peer by sending one byte on
 * wake_fd, which arrives at the peer's end of that pair. */
typedef struct {
    int wait_fd;  /* the doorbell this side parks on */
    int wake_fd;  /* the doorbell this side rings to wake the peer */
    int alive_fd; /* Unix socket to the peer: readable/hung-up when the peer is gone */
    int wait_sock; /* wait_fd is a socket (park in recv), else an eventfd (ppoll + read) */
    int wake_sock; /* wake_fd is a socket (send one byte), else an eventfd (write) */
    int policy;   /* IPCW_SPIN, IPCW_PARK, IPCW_HYBRID */
    int64_t spin_ns;
    _Atomic int *interrupt; /* set by close() from another thread */
} ipcw_waiter;

#define IPCW_SPIN 0
#define IPCW_PARK 1
#define IPCW_HYBRID 2

static inline uint64_t ipcw_align(uint64_t n) { return (n + (IPCW_ALIGN - 1)) & ~(uint64_t)(IPCW_ALIGN - 1); }

/* Largest payload of one record (a loan: it may fill the whole ring, the producer then waits
 * until the ring is empty), and of one fragment of a long copied message (a quarter ring, so
 * that several are in flight: the consumer copies one out while the producer fills the next). */
static inline uint64_t ipcw_max_record(const ipcw_ring *r) { return r->cap - IPCW_REC_HDR; }
static inline uint64_t ipcw_fragment(const ipcw_ring *r) { return r->cap / 4 - IPCW_REC_HDR; }

int64_t ipcw_now_ns(void);
void ipcw_init(void *base, uint64_t capacity);
int ipcw_attach(ipcw_ring *r, void *base, uint64_t avail, int producer);

/* producer */
int ipcw_reserve(ipcw_ring *r, uint64_t n, unsigned char **payload);
void ipcw_finish(ipcw_ring *r, uint64_t n, uint32_t kind, uint64_t aux);
int ipcw_publish(ipcw_ring *r);
uint64_t ipcw_need(const ipcw_ring *r, uint64_t n);
int ipcw_wait_space(ipcw_ring *r, uint64_t need, const ipcw_waiter *w, int64_t deadline);

/* consumer */
int ipcw_peek(ipcw_ring *r, ipcw_rec *rec);
void ipcw_consume(ipcw_ring *r, const ipcw_rec *rec);
int ipcw_release(ipcw_ring *r);
int ipcw_wait_data(ipcw_ring *r, const ipcw_waiter *w, int64_t deadline);
int ipcw_arm(ipcw_ring *r, int producer);
int ipcw_ready(ipcw_ring *r, int producer, uint64_t need);
int ipcw_spin_ready(ipcw_ring *r, int producer, uint64_t need, int64_t ns);
void ipcw_disarm(ipcw_ring *r, int producer);

/* both */
void ipcw_mark_closed(ipcw_ring *r, int producer);
uint64_t ipcw_used(ipcw_ring *r);
void ipcw_signal(int fd, int sock);
void ipcw_wake_self(const ipcw_waiter *w);
int ipcw_is_socket(int fd);
int ipcw_peer_alive(int fd);

#endif
