/*
 * One hardware queue: its io_uring, its descriptor array (mmapped from /dev/ublkcN), one buffer per
 * tag, and what each tag is doing. Only the queue's daemon touches the ring and ios[]: its queue
 * thread (queue_thread.c), or the Lua thread for a device without queue threads (csrc/lua/rings.c).
 *
 * Words used across the C, the Lua and the docs:
 *   server        one device's data plane: /dev/ublkcN, the target, the queues (server.h).
 *   queue thread  a thread of its own that serves one queue's ring (`queue_threads = true`, and every
 *                 C target without hooks).
 *   Lua-owned rings  no queue threads: the Lua thread reaps and commits every queue's ring itself
 *                 (`queue_threads = false`, the default for handlers and hooks).
 *   door          the eventfd a queue thread's ring reads: knocked to deliver answers or to stop.
 *   hand-off      the list of requests a queue thread passes to the Lua thread (handoff.h).
 *   bridge        the Lua thread's side of requests: which it holds, answers not yet sent.
 *   dispatch      one pass of the Lua side: poll, run the handlers, flush the answers.
 *   answer        what the Lua side says of a request: a result, or "pass" to the C target.
 *   commit        COMMIT_AND_FETCH_REQ: a result to the kernel, and the tag's next fetch.
 *   abandon       answer EIO for everything the Lua side holds, and take no more (a stop).
 *
 * The stop sequence:
 *   1. STOP_DEV. The kernel stops taking new requests and waits for those in flight. The Lua thread
 *      keeps dispatching meanwhile (its idle function); a stop abandons after a grace period.
 *   2. The kernel answers every tag's FETCH or COMMIT_AND_FETCH with UBLK_IO_RES_ABORT.
 *   3. A queue ends. A queue thread leaves its loop once nothing of its own is out (no command, no
 *      target I/O, nothing with Lua); a Lua-owned ring is seen ended by the reap that finds every
 *      tag aborted and no command or target I/O out (what Lua still holds is the stop's to answer).
 *      Either way the queue tells its tally (ublk_queue_report_ended): its notify fd polls readable.
 *   4. Queue threads are joined; Lua-owned rings wait (5 s at most) for target I/O, then go.
 *   5. The server is freed: descriptors unmapped, the char device closed. A buffer that target I/O
 *      may still reach stays mapped.
 *   6. DEL_DEV (DEL_DEV_ASYNC for a device that was served: it does not wait for the disk's openers).
 */
#ifndef LUA_UBLK_QUEUE_H
#define LUA_UBLK_QUEUE_H

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "handoff.h"
#include "ublk_uapi.h"

struct ublk_target;

/* user_data of every SQE on a queue ring: tag in bits 0-15, what it is in 16-23, the target's own in 24-31 */
#define UD_TAG(ud) ((int)((ud) & 0xffff))
#define UD_KIND(ud) ((unsigned)(((ud) >> 16) & 0xff))
#define UD_TGT_DATA(ud) ((unsigned)(((ud) >> 24) & 0xff))
enum { UD_CMD = 1, UD_TGT = 2, UD_DOOR = 3, UD_KNOCK = 4 };

static inline __u64 ublk_tgt_user_data(int tag, unsigned tgt_data)
{
	return (__u64)tag | ((__u64)UD_TGT << 16) | ((__u64)(tgt_data & 0xff) << 24);
}

/* ios[tag].flags */
#define IO_CMD_INFLIGHT (1U << 0) /* a FETCH or COMMIT_AND_FETCH for this tag is with the kernel */
#define IO_ABORTED (1U << 1)      /* the kernel answered UBLK_IO_RES_ABORT: the tag is done */
#define IO_DIRTY (1U << 2)        /* the buffer holds a write's data (the null target must zero it) */

struct ublk_io {
	unsigned flags;
	int tgt_inflight; /* the target's SQEs still out for this request */
	int result;       /* the target's running result for multi-SQE requests */
};

/* An answer from the Lua thread: a result, or passed to the C target. */
struct ublk_remote_done {
	uint16_t tag;
	uint16_t pass; /* run the target's queue_io on it (a hook said "pass") */
	int result;
};

/* The queue's daemon counts; the Lua thread reads the counters while it runs (dev:stats()): relaxed
 * atomics, since each value matters and not their order. Only the daemon writes, so an add is a
 * relaxed load and store, not a locked read-modify-write on every request. */
#define QUEUE_STAT_ADD(q, field, n) \
	__atomic_store_n(&(q)->stats.field, __atomic_load_n(&(q)->stats.field, __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define QUEUE_STAT_SET(q, field, v) __atomic_store_n(&(q)->stats.field, (v), __ATOMIC_RELAXED)
#define QUEUE_STAT_READ(st, field) __atomic_load_n(&(st)->field, __ATOMIC_RELAXED)

struct ublk_queue_stats {
	uint64_t requests; /* requests served */
	uint64_t wakeups;  /* returns from io_uring_submit_and_wait, or reaps that found completions */
	uint64_t submits;  /* SQEs submitted */
	uint64_t errors;   /* requests answered with an error */
	int cmd_error;     /* first unexpected -errno of a FETCH/COMMIT (0: none) */
};

/* What the queues of a server tell it: how many started or failed (the first failure kept), and an
 * eventfd that counts the queues that ended. The server's; each queue holds a pointer to it. */
struct ublk_queue_tally {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int nr_ready;
	int nr_failed;
	int first_error;        /* -errno of the first queue that failed to start */
	const char *first_why;  /* and what it was doing */
	int notify;             /* eventfd, non-blocking: written once per queue that ended */
};

/* What a queue needs of its server, given when it is made. */
struct ublk_queue_config {
	int q_id;
	int depth;
	unsigned buf_size;              /* max_io_buf_bytes: one buffer per tag */
	int cdev_fd;                    /* /dev/ublkcN */
	int legacy;                     /* send legacy io opcodes */
	struct ublk_target *tgt;        /* the server's, shared by every queue */
	struct ublk_handoff *handoff;   /* the server's list of requests for Lua */
	struct ublk_queue_tally *tally; /* the server's */
};

struct ublk_queue {
	struct ublk_target *tgt;
	struct ublk_handoff *handoff;
	struct ublk_queue_tally *tally;
	int q_id;
	int depth;
	unsigned buf_size;
	int cdev_fd;
	int legacy;
	struct ublksrv_io_desc *descs; /* read-only, shared with the kernel */
	size_t descs_len;
	unsigned char *bufs;           /* depth * buf_size, page aligned */
	struct io_uring ring;
	int ring_ready;
	int cmd_inflight;              /* uring_cmds with the kernel */
	int tgt_inflight;              /* target SQEs with the kernel */
	int lua_inflight;              /* requests for Lua, not yet answered */
	int nr_to_lua;                 /* requests for Lua since the daemon last took them */
	struct ublk_handoff_req *to_lua; /* where they go: depth slots, or the owner's array (rings.c) */
	int kernel_stopping;           /* an ABORT was seen */
	int ended;                     /* the tally was told the queue ended */
	/* queue threads only (queue_thread.c) */
	int door;                      /* eventfd */
	__u64 door_value;              /* where the ring reads it into */
	pthread_t thread;
	int thread_started;
	cpu_set_t cpus;
	int has_cpus;
	atomic_int stop;               /* asked to stop by the owner */
	pthread_mutex_t remote_lock;
	struct ublk_remote_done *remote; /* depth slots: answers from the Lua thread */
	int nr_remote;
	struct ublk_queue_stats stats;
	struct ublk_io ios[];
};

/* Allocate the queue and map what the kernel shares; the ring is made by its daemon. 0 or -errno. */
int ublk_queue_new(struct ublk_queue **out, const struct ublk_queue_config *cfg);
void ublk_queue_free(struct ublk_queue *q);

/* The daemon's start: the ring (no DEFER_TASKRUN when polled: the Lua thread waits for it in
 * epoll, where deferred task work would never run), then FETCH_REQ for every tag in one submit.
 * 0, or -errno with *why naming the step (the ring is gone again then). */
int ublk_queue_start(struct ublk_queue *q, int polled, const char **why);
/* The ring goes, if made: the FETCHes still with the kernel are cancelled. */
void ublk_queue_exit(struct ublk_queue *q);
/* Before a Lua-owned ring goes: wait (5 s at most) for the target's I/O, which reads or writes the
 * buffers. Only counted: what it would answer is moot once the device is going. */
void ublk_queue_drain(struct ublk_queue *q);

/* Handle one CQE of the queue's own: a command back (the request goes to the target, or to
 * to_lua when its op is hooked) or a target completion. 0 when handled; else its UD_KIND, for
 * the daemon (the door and the knock are a queue thread's). */
unsigned ublk_queue_handle_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe);
/* An answer from the Lua side: commit it, or pass it to the target. */
void ublk_queue_answer(struct ublk_queue *q, const struct ublk_remote_done *d);
/* Requests for Lua that no Lua side will take (it is gone): answered EIO here. */
void ublk_queue_refuse(struct ublk_queue *q, const struct ublk_handoff_req *reqs, int n);
/* When requests for Lua were received: one clock read for a batch. */
void ublk_queue_stamp(struct ublk_handoff_req *reqs, int n);

/* The kernel aborted the queue and nothing of ours is still with it (commands or target I/O). */
static inline int ublk_queue_done(const struct ublk_queue *q)
{
	return q->kernel_stopping && q->cmd_inflight == 0 && q->tgt_inflight == 0;
}

/* Tell the tally: started (err 0) or failed to; ended (once: later calls do nothing). */
void ublk_queue_report_ready(struct ublk_queue *q, int err, const char *why);
void ublk_queue_report_ended(struct ublk_queue *q);

/* Called by a target on the daemon's thread: the request in tag is done. */
void ublk_queue_complete(struct ublk_queue *q, int tag, int result);
/* A free SQE for a target; the ring (depth * (1 + sqes_per_io) + 2 entries) never runs dry. */
struct io_uring_sqe *ublk_queue_get_sqe(struct ublk_queue *q);
/* The buffer of one tag. */
static inline void *ublk_queue_buf(struct ublk_queue *q, int tag)
{
	return q->bufs + (size_t)tag * q->buf_size;
}

/* Queue threads (queue_thread.c). The thread's body (pthread start routine); answers from another
 * thread (never blocks on the queue; one knock on its door per batch; 0 or -errno of the knock);
 * a request to stop once nothing is in flight (any thread). */
void *ublk_queue_thread(void *arg);
int ublk_queue_post_answers(struct ublk_queue *q, const struct ublk_remote_done *done, int n);
void ublk_queue_request_stop(struct ublk_queue *q);

#endif
