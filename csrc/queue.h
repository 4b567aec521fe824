/*
 * One hardware queue: its thread, its io_uring, its descriptor array (mmapped from /dev/ublkcN), one
 * buffer per tag, and the door other threads knock on (an eventfd the ring itself reads) to complete
 * requests or to ask the thread to stop. Only the queue's daemon touches the ring and ios[]: its
 * thread, or the Lua thread for an inline queue (which has no thread and no door).
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

struct ublk_server;
struct ublk_target;

/* user_data of every SQE on a queue ring: tag in bits 0-15, what it is in 16-23, the target's own in 24-31 */
#define UD_TAG(ud) ((int)((ud) & 0xffff))
#define UD_KIND(ud) ((unsigned)(((ud) >> 16) & 0xff))
#define UD_TGT_DATA(ud) ((unsigned)(((ud) >> 24) & 0xff))
enum { UD_CMD = 1, UD_TGT = 2, UD_EVENT = 3, UD_KNOCK = 4 };

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

/* A request the Lua thread hands back: answered with result, or passed to the C target. */
struct ublk_remote_done {
	uint16_t tag;
	uint16_t pass; /* run the target's queue_io on it (a hook said "pass") */
	int result;
};

/* The queue thread counts; the Lua thread reads the counters while it runs (dev:stats()): relaxed
 * atomics, since each value matters and not their order. Only the queue thread writes, so an add is
 * a relaxed load and store, not a locked read-modify-write on every request. */
#define QUEUE_STAT_ADD(q, field, n) \
	__atomic_store_n(&(q)->stats.field, __atomic_load_n(&(q)->stats.field, __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define QUEUE_STAT_SET(q, field, v) __atomic_store_n(&(q)->stats.field, (v), __ATOMIC_RELAXED)
#define QUEUE_STAT_READ(st, field) __atomic_load_n(&(st)->field, __ATOMIC_RELAXED)

struct ublk_queue_stats {
	uint64_t requests; /* requests served */
	uint64_t wakeups;  /* returns from io_uring_submit_and_wait */
	uint64_t submits;  /* SQEs submitted */
	uint64_t errors;   /* requests answered with an error */
	int cmd_error;     /* first unexpected -errno of a FETCH/COMMIT (0: none) */
};

struct ublk_queue {
	struct ublk_server *srv;
	struct ublk_target *tgt;       /* the server's, shared by every queue */
	int q_id;
	int depth;
	unsigned buf_size;
	struct ublksrv_io_desc *descs; /* read-only, shared with the kernel */
	size_t descs_len;
	unsigned char *bufs;           /* depth * buf_size, page aligned */
	struct io_uring ring;
	int ring_ready;
	int door;                      /* eventfd */
	__u64 door_value;              /* where the ring reads it into */
	pthread_t thread;
	int thread_started;
	cpu_set_t cpus;
	int has_cpus;
	int cmd_inflight;              /* uring_cmds with the kernel */
	int tgt_inflight;              /* target SQEs with the kernel */
	int lua_inflight;              /* requests handed to the Lua thread, not yet back */
	int nr_to_lua;                 /* this wake-up's hand-offs, pushed before the thread sleeps */
	struct ublk_handoff_req *to_lua; /* depth slots */
	int kernel_stopping;           /* an ABORT was seen */
	int inline_ended;              /* inline: the owner was told the kernel ended the queue */
	atomic_int stop;               /* asked to stop by the owner */
	pthread_mutex_t remote_lock;
	struct ublk_remote_done *remote; /* depth slots */
	int nr_remote;
	struct ublk_queue_stats stats;
	struct ublk_io ios[];
};

/* Allocate the queue and map what the kernel shares; the ring is made by the thread itself. */
int ublk_queue_new(struct ublk_queue **out, struct ublk_server *srv, int q_id);
void ublk_queue_free(struct ublk_queue *q);

/* The thread's body (pthread start routine). */
void *ublk_queue_main(void *arg);

/* Called by a target on the queue thread: the request in tag is done. */
void ublk_queue_complete(struct ublk_queue *q, int tag, int result);
/* Called from any other thread: requests handed off earlier come back (answered, or to pass to the
 * target). Never blocks on the queue; one knock on its door per batch. 0 or -errno of the knock. */
int ublk_queue_complete_remote_batch(struct ublk_queue *q, const struct ublk_remote_done *done, int n);
/* Ask the thread to stop once nothing is in flight (any thread). */
void ublk_queue_request_stop(struct ublk_queue *q);

/* Inline queues (server.h: inline_lua): the Lua thread owns the ring. Start: ring and FETCH_REQ for
 * every tag. Reap: what the ring holds, handled as the queue thread would (ops without Lua go to the
 * C target, its completions are committed); the requests for Lua go into out (room for depth), or are
 * answered EIO once the hand-off is closed (the Lua side is gone); *ended once (the first reap after
 * the kernel aborted every tag with no target I/O out). Commit: answers, submitted at once (what a
 * failed submit leaves in the ring goes with the next reap); a passed request goes to the C target.
 * Stop: the ring goes, once the target's I/O is back. */
int ublk_queue_inline_start(struct ublk_queue *q, const char **why);
int ublk_queue_inline_reap(struct ublk_queue *q, struct ublk_handoff_req *out, int *ended);
int ublk_queue_inline_commit(struct ublk_queue *q, const struct ublk_remote_done *done, int n);
void ublk_queue_inline_stop(struct ublk_queue *q);
/* Whether a reap has work: 1, completions in the ring; 2, only SQEs a failed submit left (the reap
 * submits them again); 0, nothing. */
int ublk_queue_inline_ready(struct ublk_queue *q);

/* A free SQE for a target; the ring (depth * (1 + sqes_per_io) + 2 entries) never runs dry. */
struct io_uring_sqe *ublk_queue_get_sqe(struct ublk_queue *q);
/* The buffer of one tag. */
static inline void *ublk_queue_buf(struct ublk_queue *q, int tag)
{
	return q->bufs + (size_t)tag * q->buf_size;
}

#endif
