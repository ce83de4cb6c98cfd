/* Share checks on threads of their own, which never take Python's GIL.
 * Written for nomp.
 *
 * The reactor thread queues each share on its own (its job, its 32-byte
 * record, a tag) and goes on; the threads make the batches. A thread takes
 * the oldest share's job and every share of that job queued behind it (up
 * to NOMP_WORKERS_MAX_BATCH), so shares that arrive close together fill one
 * call's SIMD lanes. When fewer than `full` of them are queued and the
 * oldest arrived less than `linger_ns` ago, it waits until then for more
 * first: the wait is the thread's, the reactor's turn is not held and no
 * timer wakes it. A checked batch goes on the finished list; when that list
 * goes from empty to not empty the thread writes a byte to `notify_fd`, so
 * the reactor wakes once for however many batches finish before it looks,
 * and takes their results with nomp_workers_finished. The caller keeps each
 * share's job alive until its result is taken. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "nomp_hash.h"

typedef struct share {
    const nomp_job *job;
    uint64_t tag;
    uint64_t queued_at; /* CLOCK_MONOTONIC, ns */
    int may_wait;       /* it arrived while no batch was being checked */
    unsigned char record[NOMP_SHARE_SIZE];
    struct share *next;
} share;

typedef struct batch {
    size_t count;
    int status;
    uint64_t tags[NOMP_WORKERS_MAX_BATCH];
    unsigned char results[NOMP_WORKERS_MAX_BATCH * NOMP_RESULT_SIZE];
    struct batch *next;
} batch;

struct nomp_workers {
    pthread_mutex_t lock;
    pthread_cond_t queued;  /* a share was queued while a thread waited, or stopping */
    pthread_cond_t company; /* `full` shares are queued while a thread lingers, or stopping */
    share *head, *tail;
    size_t waiting;  /* shares queued, not yet taken into a batch */
    size_t checking; /* batches taken and not yet finished */
    size_t idle;     /* threads waiting on `queued` */
    size_t lingering; /* threads waiting on `company` */
    uint64_t batches; /* batches taken, ever */
    batch *finished_head, *finished_tail;
    size_t finished_shares; /* shares in the finished batches not yet taken */
    int stopping;
    int notified; /* a byte is written to notify_fd and the finished list not emptied since */
    int notify_fd;
    size_t full;
    uint64_t linger_ns;
    int niceness;
    size_t threads;
    pthread_t *ids;
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void notify(int fd)
{
    const char byte = 1;
    /* A full pipe already holds a wake-up the reactor has not read. */
    while (write(fd, &byte, 1) < 0 && errno == EINTR)
        ;
}

/* How many queued shares the oldest one's job has, counting up to `enough`. */
static size_t queued_of_oldest_job(const nomp_workers *w, size_t enough)
{
    size_t count = 0;
    for (const share *s = w->head; s != NULL && count < enough; s = s->next) {
        if (s->job == w->head->job)
            count++;
    }
    return count;
}

/* Take the oldest share's job and its queued shares into `b`, in order; the
 * other jobs' shares keep their places. Returns that job. */
static const nomp_job *take_batch(nomp_workers *w, batch *b, unsigned char *records)
{
    const nomp_job *job = w->head->job;
    share **link = &w->head;
    share *last = NULL;
    b->count = 0;
    while (*link != NULL && b->count < NOMP_WORKERS_MAX_BATCH) {
        share *s = *link;
        if (s->job != job) {
            last = s;
            link = &s->next;
            continue;
        }
        memcpy(records + b->count * NOMP_SHARE_SIZE, s->record, NOMP_SHARE_SIZE);
        b->tags[b->count++] = s->tag;
        *link = s->next;
        free(s);
    }
    if (*link == NULL)
        w->tail = last;
    w->waiting -= b->count;
    return job;
}

/* Below the reactor thread: when the cores are all busy, the thread that
 * reads and answers every miner goes first, and a hash waits a little
 * instead of the replies of every connection. A new thread starts with its
 * maker's nice value; lowering its own priority needs no privilege, and
 * past the bottom the kernel keeps it at 19. */
static void lower_priority(const nomp_workers *w)
{
#if defined(__linux__)
    if (w->niceness > 0) {
        id_t self = (id_t)syscall(SYS_gettid);
        errno = 0;
        int nice_now = getpriority(PRIO_PROCESS, self);
        if (errno == 0)
            setpriority(PRIO_PROCESS, self, nice_now + w->niceness);
    }
#else
    (void)w;
#endif
}

static void *work(void *arg)
{
    nomp_workers *w = arg;
    unsigned char records[NOMP_WORKERS_MAX_BATCH * NOMP_SHARE_SIZE];
    lower_priority(w);
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->head == NULL && !w->stopping) {
            w->idle++;
            pthread_cond_wait(&w->queued, &w->lock);
            w->idle--;
        }
        if (w->head == NULL)
            break; /* stopping, and nothing is left to check */
        if (!w->stopping && w->head->may_wait && queued_of_oldest_job(w, w->full) < w->full) {
            uint64_t due = w->head->queued_at + w->linger_ns;
            if (now_ns() < due) {
                struct timespec until = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
                w->lingering++;
                pthread_cond_timedwait(&w->company, &w->lock, &until);
                w->lingering--;
                continue; /* look again: more came, or another thread took them */
            }
        }
        batch *b = malloc(sizeof *b);
        if (b == NULL) {
            /* Out of memory: try again after a pause rather than drop a share. */
            pthread_mutex_unlock(&w->lock);
            struct timespec pause = {0, 1000000};
            nanosleep(&pause, NULL);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        const nomp_job *job = take_batch(w, b, records);
        w->checking++;
        w->batches++;
        pthread_mutex_unlock(&w->lock);
        b->status = nomp_job_check(job, records, b->count, b->results);
        b->next = NULL;
        pthread_mutex_lock(&w->lock);
        w->checking--;
        if (w->finished_tail != NULL)
            w->finished_tail->next = b;
        else
            w->finished_head = b;
        w->finished_tail = b;
        w->finished_shares += b->count;
        if (!w->notified) {
            w->notified = 1;
            pthread_mutex_unlock(&w->lock);
            notify(w->notify_fd);
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static void join_workers(nomp_workers *w)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_broadcast(&w->queued);
    pthread_cond_broadcast(&w->company);
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < w->threads; i++)
        pthread_join(w->ids[i], NULL);
    w->threads = 0;
}

nomp_workers *nomp_workers_new(int threads, int notify_fd, size_t full, uint64_t linger_ns, int niceness)
{
    if (threads < 1 || full < 1 || full > NOMP_WORKERS_MAX_BATCH || niceness < 0)
        return NULL;
    nomp_workers *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->ids = calloc((size_t)threads, sizeof *w->ids);
    if (w->ids == NULL || pthread_mutex_init(&w->lock, NULL) != 0) {
        free(w->ids);
        free(w);
        return NULL;
    }
    pthread_condattr_t monotonic;
    int made = pthread_condattr_init(&monotonic) == 0;
    made = made && pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC) == 0;
    made = made && pthread_cond_init(&w->company, &monotonic) == 0;
    if (made && pthread_cond_init(&w->queued, NULL) != 0) {
        pthread_cond_destroy(&w->company);
        made = 0;
    }
    pthread_condattr_destroy(&monotonic);
    if (!made) {
        pthread_mutex_destroy(&w->lock);
        free(w->ids);
        free(w);
        return NULL;
    }
    w->notify_fd = notify_fd;
    w->full = full;
    w->linger_ns = linger_ns;
    w->niceness = niceness;
    /* Signals stay with the process's other threads: these start with all of them blocked. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    for (; w->threads < (size_t)threads; w->threads++) {
        if (pthread_create(&w->ids[w->threads], NULL, work, w) != 0)
            break;
#if defined(__linux__)
        char name[16]; /* the kernel's limit, with its NUL */
        snprintf(name, sizeof name, "nomp-hash-%u", (unsigned)(w->threads % 1000));
        pthread_setname_np(w->ids[w->threads], name);
#endif
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (w->threads < (size_t)threads) {
        nomp_workers_free(w);
        return NULL;
    }
    return w;
}

int nomp_workers_submit(nomp_workers *w, const nomp_job *job, const unsigned char *record, uint64_t tag)
{
    share *s = malloc(sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->job = job;
    s->tag = tag;
    s->queued_at = now_ns();
    memcpy(s->record, record, NOMP_SHARE_SIZE);
    s->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        free(s);
        return -EINVAL;
    }
    if (w->tail != NULL)
        w->tail->next = s;
    else
        w->head = s;
    w->tail = s;
    w->waiting++;
    s->may_wait = w->linger_ns > 0 && w->checking == 0;
    /* An idle thread is woken unless one lingering over this share's job will take it. */
    if (w->idle > 0 && (w->lingering == 0 || job != w->head->job))
        pthread_cond_signal(&w->queued);
    /* A lingering thread takes this share without a signal, unless it may
     * make the oldest share's job a full batch: then it looks again. */
    if (w->lingering > 0 && job == w->head->job && w->waiting >= w->full)
        pthread_cond_broadcast(&w->company);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

size_t nomp_workers_finished(nomp_workers *w, uint64_t *tags, int *statuses, unsigned char *results, size_t max)
{
    /* Whole batches only: one that does not fit in `max` is left for the next call. */
    size_t taken = 0;
    pthread_mutex_lock(&w->lock);
    while (w->finished_head != NULL) {
        batch *b = w->finished_head;
        if (taken + b->count > max)
            break;
        for (size_t i = 0; i < b->count; i++) {
            tags[taken + i] = b->tags[i];
            statuses[taken + i] = b->status;
        }
        memcpy(results + taken * NOMP_RESULT_SIZE, b->results, b->count * NOMP_RESULT_SIZE);
        taken += b->count;
        w->finished_shares -= b->count;
        w->finished_head = b->next;
        if (w->finished_head == NULL)
            w->finished_tail = NULL;
        free(b);
    }
    if (w->finished_head == NULL)
        w->notified = 0;
    pthread_mutex_unlock(&w->lock);
    return taken;
}

void nomp_workers_counts(nomp_workers *w, size_t *waiting, size_t *checking, uint64_t *batches)
{
    pthread_mutex_lock(&w->lock);
    *waiting = w->waiting;
    *checking = w->checking;
    *batches = w->batches;
    pthread_mutex_unlock(&w->lock);
}

void nomp_workers_stop(nomp_workers *w)
{
    if (w->threads > 0)
        join_workers(w);
}

void nomp_workers_free(nomp_workers *w)
{
    if (w == NULL)
        return;
    nomp_workers_stop(w);
    while (w->head != NULL) {
        share *s = w->head;
        w->head = s->next;
        free(s);
    }
    while (w->finished_head != NULL) {
        batch *b = w->finished_head;
        w->finished_head = b->next;
        free(b);
    }
    pthread_cond_destroy(&w->queued);
    pthread_cond_destroy(&w->company);
    pthread_mutex_destroy(&w->lock);
    free(w->ids);
    free(w);
}
