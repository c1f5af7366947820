/* The machine's floor, measured in C: what the fastest possible implementation of each
 * mechanism achieves here, so `ipcwire bench` can show ipcwire's numbers beside them without
 * a compiler on the user's machine.
 *
 * floor_pingpong(kind, iterations, size=64, cpus=None, gap_ns=0) -> list[int]: round-trip
 * nanoseconds per iteration between this process and a forked child, pinned to two different CPUs: `cpus`
 * (a pair), or the first two of this thread's affinity mask (with only one CPU allowed, both
 * share it, which measures something else: no cross-core wake-up). Each side copies `size` bytes in and out of the shared buffer (or
 * writes and reads them through the kernel). Kinds:
 *   spin     shared memory, both sides busy-poll a sequence number (the latency floor)
 *   futex    shared memory, both sides sleep in FUTEX_WAIT and wake with FUTEX_WAKE
 *   eventfd  shared memory, woken through eventfds: write, ppoll([eventfd, socket]), read;
 *            what ipcwire's `park` policy did before its doorbells became socketpairs
 *   unix     a Unix stream socketpair, write + read
 *   pipe     two pipes, write + read
 * With `gap_ns` > 0 the parent sleeps that long (clock_nanosleep, untimed) before each measured
 * round trip, as ipcwire's bench does for its rows "after idle": the peer has been asleep that
 * long, so the wake-up is the one a service that is not saturated pays.
 * memcpy_bandwidth(size, iterations) -> float: bytes per second of memcpy at that size.
 *
 * The child only runs this file's loops (no Python, no allocation) and leaves with _exit, so
 * forking from a threaded interpreter is safe. It dies with the parent (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { K_SPIN, K_FUTEX, K_EVENTFD, K_UNIX, K_PIPE };

struct shared {
    _Alignas(128) _Atomic uint32_t ping;
    _Alignas(128) _Atomic uint32_t pong;
    _Alignas(128) unsigned char buf[];
};

struct pp {
    int kind;
    uint32_t total;    /* warm-up + measured iterations */
    uint32_t warmup;
    int64_t gap_ns;    /* idle time before each measured round trip (0: back to back) */
    size_t size;
    struct shared *sh;
    unsigned char *a_buf, *b_buf; /* in sh->buf: parent->child, child->parent */
    unsigned char *local;         /* private scratch of `size` bytes */
    int fd_a[2], fd_b[2];         /* parent->child and child->parent channels */
    int64_t *samples;
    pid_t child;
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int child_gone(pid_t child)
{
    int status;
    return child > 0 && waitpid(child, &status, WNOHANG) == child;
}

/* Wait until *word == want. `other` is the process that will set it (checked now and then). */
static int await(struct pp *p, _Atomic uint32_t *word, uint32_t want, int efd, pid_t other)
{
    switch (p->kind) {
    case K_SPIN:
        for (uint32_t i = 1; atomic_load_explicit(word, memory_order_acquire) != want; i++) {
            relax();
            if ((i & 0xfffff) == 0 && (other ? child_gone(other) : getppid() == 1))
                return -1;
        }
        return 0;
    case K_FUTEX: {
        struct timespec ts = {0, 100000000};
        for (;;) {
            uint32_t v = atomic_load_explicit(word, memory_order_acquire);
            if (v == want)
                return 0;
            if (futex(word, FUTEX_WAIT, v, &ts) < 0 && errno == ETIMEDOUT &&
                (other ? child_gone(other) : getppid() == 1))
                return -1;
        }
    }
    case K_EVENTFD:
        for (;;) {
            if (atomic_load_explicit(word, memory_order_acquire) == want)
                return 0;
            struct pollfd fds[2] = {{efd, POLLIN, 0}, {-1, POLLIN, 0}};
            struct timespec ts = {0, 100000000};
            int n = ppoll(fds, 2, &ts, NULL);
            if (n > 0) {
                uint64_t v;
                if (read(efd, &v, sizeof v) < 0 && errno != EAGAIN && errno != EINTR)
                    return -1;
            } else if (n == 0 && (other ? child_gone(other) : getppid() == 1)) {
                return -1;
            }
        }
    }
    return -1;
}

static void signal_peer(struct pp *p, _Atomic uint32_t *word, uint32_t val, int efd)
{
    atomic_store_explicit(word, val, memory_order_release);
    if (p->kind == K_FUTEX) {
        futex(word, FUTEX_WAKE, 1, NULL);
    } else if (p->kind == K_EVENTFD) {
        uint64_t one = 1;
        ssize_t rc = write(efd, &one, sizeof one);
        (void)rc;
    }
}

static int parent_round(struct pp *p, uint32_t i)
{
    switch (p->kind) {
    case K_UNIX:
    case K_PIPE:
        if (write_all(p->fd_a[1], p->local, p->size) < 0 || read_all(p->fd_b[0], p->local, p->size) < 0)
            return -1;
        return 0;
    default:
        memcpy(p->a_buf, p->local, p->size);
        signal_peer(p, &p->sh->ping, i, p->fd_a[1]);
        if (await(p, &p->sh->pong, i, p->fd_b[0], p->child) < 0)
            return -1;
        memcpy(p->local, p->b_buf, p->size);
        return 0;
    }
}

static void child_main(struct pp *p, int cpu)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    for (uint32_t i = 1; i <= p->total; i++) {
        if (p->kind == K_UNIX || p->kind == K_PIPE) {
            if (read_all(p->fd_a[0], p->local, p->size) < 0 ||
                write_all(p->fd_b[1], p->local, p->size) < 0)
                _exit(1);
            continue;
        }
        if (await(p, &p->sh->ping, i, p->fd_a[0], 0) < 0)
            _exit(1);
        memcpy(p->local, p->a_buf, p->size);
        memcpy(p->b_buf, p->local, p->size);
        signal_peer(p, &p->sh->pong, i, p->fd_b[1]);
    }
    _exit(0);
}

/* The first two CPUs this thread may run on, or -1s. */
static void pick_cpus(cpu_set_t *old, int *a, int *b)
{
    *a = *b = -1;
    if (sched_getaffinity(0, sizeof *old, old) != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, old)) {
            if (*a < 0)
                *a = c;
            else {
                *b = c;
                return;
            }
        }
    *a = -1;
}

static void close_fds(struct pp *p)
{
    for (int i = 0; i < 2; i++) {
        if (p->fd_a[i] >= 0)
            close(p->fd_a[i]);
        if (p->fd_b[i] >= 0)
            close(p->fd_b[i]);
        p->fd_a[i] = p->fd_b[i] = -1;
    }
}

static int open_fds(struct pp *p)
{
    switch (p->kind) {
    case K_EVENTFD:
        p->fd_a[0] = p->fd_a[1] = -1;
        p->fd_b[0] = p->fd_b[1] = -1;
        if ((p->fd_a[0] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
            (p->fd_b[0] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
            return -1;
        p->fd_a[1] = dup(p->fd_a[0]);
        p->fd_b[1] = dup(p->fd_b[0]);
        return p->fd_a[1] < 0 || p->fd_b[1] < 0 ? -1 : 0;
    case K_UNIX: {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            return -1;
        /* parent writes fd_a[1] reads fd_b[0]; child reads fd_a[0] writes fd_b[1] */
        p->fd_a[1] = sv[0];
        p->fd_b[0] = dup(sv[0]);
        p->fd_a[0] = sv[1];
        p->fd_b[1] = dup(sv[1]);
        return p->fd_b[0] < 0 || p->fd_b[1] < 0 ? -1 : 0;
    }
    case K_PIPE:
        if (pipe2(p->fd_a, O_CLOEXEC) < 0)
            return -1;
        return pipe2(p->fd_b, O_CLOEXEC);
    default:
        return 0;
    }
}

/* Runs without the GIL. Returns 0, or -1 with errno (or ECHILD when the child failed). */
static int run_pingpong(struct pp *p, int want_a, int want_b)
{
    cpu_set_t old;
    int cpu_a, cpu_b, rc = 0;
    pick_cpus(&old, &cpu_a, &cpu_b);
    if (want_a >= 0) {
        cpu_a = want_a;
        cpu_b = want_b;
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        child_main(p, cpu_b);
    p->child = pid;
    if (cpu_a >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu_a, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    for (uint32_t i = 1; i <= p->total; i++) {
        if (p->gap_ns > 0 && i > p->warmup) {
            struct timespec gap = {(time_t)(p->gap_ns / 1000000000),
                                   (long)(p->gap_ns % 1000000000)};
            while (clock_nanosleep(CLOCK_MONOTONIC, 0, &gap, &gap) == EINTR)
                ;
        }
        int64_t t0 = now_ns();
        if (parent_round(p, i) < 0) {
            rc = -1;
            errno = ECHILD;
            break;
        }
        if (i > p->warmup)
            p->samples[i - 1 - p->warmup] = now_ns() - t0;
    }
    if (cpu_a >= 0)
        sched_setaffinity(0, sizeof old, &old);
    if (rc < 0)
        kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        errno = ECHILD;
        rc = -1;
    }
    return rc;
}

PyObject *ipcw_floor_pingpong(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *kwlist[] = {"kind", "iterations", "size", "cpus", "gap_ns", NULL};
    const char *kind;
    Py_ssize_t iterations, size = 64;
    long long gap_ns = 0;
    PyObject *cpus = Py_None;
    int want_a = -1, want_b = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sn|nOL", kwlist, &kind, &iterations, &size,
                                     &cpus, &gap_ns))
        return NULL;
    if (gap_ns < 0 || gap_ns > 10000000000LL) {
        PyErr_SetString(PyExc_ValueError, "gap_ns must be 0..1e10 (at most 10 s)");
        return NULL;
    }
    if (cpus != Py_None &&
        (!PyTuple_Check(cpus) || !PyArg_ParseTuple(cpus, "ii", &want_a, &want_b) ||
         want_a < 0 || want_b < 0 || want_a >= CPU_SETSIZE || want_b >= CPU_SETSIZE)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "cpus must be a pair of CPU numbers, such as (0, 1)");
        return NULL;
    }
    static const char *const kinds[] = {"spin", "futex", "eventfd", "unix", "pipe"};
    struct pp p;
    memset(&p, 0, sizeof p);
    p.kind = -1;
    for (int k = 0; k < 5; k++)
        if (strcmp(kind, kinds[k]) == 0)
            p.kind = k;
    if (p.kind < 0) {
        PyErr_SetString(PyExc_ValueError, "kind must be spin, futex, eventfd, unix or pipe");
        return NULL;
    }
    if (iterations < 1 || iterations > 100000000 || size < 0 || size > (1 << 26)) {
        PyErr_SetString(PyExc_ValueError, "iterations 1..1e8 and size 0..64 MiB");
        return NULL;
    }
    p.warmup = (uint32_t)(iterations / 10 < 100 ? 100 : iterations / 10);
    p.total = p.warmup + (uint32_t)iterations;
    p.size = (size_t)size;
    p.gap_ns = (int64_t)gap_ns;
    for (int i = 0; i < 2; i++)
        p.fd_a[i] = p.fd_b[i] = -1;
    size_t map_len = sizeof(struct shared) + 2 * (p.size + 128);
    p.sh = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    p.samples = PyMem_RawMalloc(sizeof(int64_t) * (size_t)iterations);
    p.local = PyMem_RawMalloc(p.size + 1);
    PyObject *result = NULL;
    if (p.sh == MAP_FAILED || p.samples == NULL || p.local == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    p.a_buf = p.sh->buf;
    p.b_buf = p.sh->buf + ((p.size + 127) & ~(size_t)127);
    memset(p.local, 0x5a, p.size + 1);
    if (open_fds(&p) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    int rc, err;
    Py_BEGIN_ALLOW_THREADS
    rc = run_pingpong(&p, want_a, want_b);
    err = errno;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        errno = err;
        if (err == ECHILD)
            PyErr_SetString(PyExc_RuntimeError, "the ping-pong child process failed");
        else
            PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyList_New(iterations);
    for (Py_ssize_t i = 0; result != NULL && i < iterations; i++) {
        PyObject *v = PyLong_FromLongLong(p.samples[i]);
        if (v == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, v);
    }
done:
    close_fds(&p);
    if (p.sh != MAP_FAILED && p.sh != NULL)
        munmap(p.sh, map_len);
    PyMem_RawFree(p.samples);
    PyMem_RawFree(p.local);
    return result;
}

PyObject *ipcw_memcpy_bandwidth(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *kwlist[] = {"size", "iterations", NULL};
    Py_ssize_t size, iterations;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nn", kwlist, &size, &iterations))
        return NULL;
    if (size < 1 || iterations < 1) {
        PyErr_SetString(PyExc_ValueError, "size and iterations must be positive");
        return NULL;
    }
    unsigned char *src = aligned_alloc(64, ((size_t)size + 63) & ~(size_t)63);
    unsigned char *dst = aligned_alloc(64, ((size_t)size + 63) & ~(size_t)63);
    if (src == NULL || dst == NULL) {
        free(src);
        free(dst);
        return PyErr_NoMemory();
    }
    int64_t elapsed;
    Py_BEGIN_ALLOW_THREADS
    memset(src, 1, (size_t)size);
    memset(dst, 2, (size_t)size);
    memcpy(dst, src, (size_t)size); /* warm */
    int64_t t0 = now_ns();
    for (Py_ssize_t i = 0; i < iterations; i++) {
        memcpy(dst, src, (size_t)size);
        __asm__ __volatile__("" : : "r"(dst), "r"(src) : "memory");
    }
    elapsed = now_ns() - t0;
    Py_END_ALLOW_THREADS
    free(src);
    free(dst);
    if (elapsed <= 0)
        elapsed = 1;
    return PyFloat_FromDouble((double)size * (double)iterations * 1e9 / (double)elapsed);
}
