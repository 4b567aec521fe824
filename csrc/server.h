/*
 * The data plane of one device: /dev/ublkcN, the target, and one queue thread per hardware queue
 * (or, for a device with Lua handlers or hooks, queue rings the Lua thread serves itself: inline_lua).
 * Owned by the device handle (lua_server.c); everything here runs without Lua.
 */
#ifndef LUA_UBLK_SERVER_H
#define LUA_UBLK_SERVER_H

#include <pthread.h>
#include <sched.h>

#include "queue.h"
#include "target.h"

struct ublk_server {
	int dev_id;
	int nr_queues;
	int depth;
	unsigned buf_size;      /* max_io_buf_bytes: one buffer per tag */
	int legacy;             /* send legacy io opcodes */
	int cdev_fd;
	struct ublk_target tgt;
	struct ublk_handoff handoff; /* requests for the Lua thread (hooked ops only) */
	int notify;             /* eventfd: a queue thread ended (for the owner's wait) */
	pthread_mutex_t lock;   /* guards the start-up tallies */
	pthread_cond_t cond;
	int nr_ready;
	int nr_failed;
	int nr_ended;           /* queues that ended, as seen by ublk_server_alive */
	int first_error;        /* -errno of the first queue that failed to start */
	const char *first_why;  /* and what it was doing */
	int running;            /* threads were started and not yet joined */
	int started;            /* ublk_server_start ran: queues keep their state, so never twice */
	int inline_lua;         /* no queue threads: the Lua thread owns the queue rings (queue.h) */
	struct ublk_queue **queues;
};

struct ublk_server_config {
	int dev_id;
	int nr_queues;
	int depth;
	unsigned buf_size;
	int legacy;
	int open_timeout_ms; /* how long to retry ENOENT/EACCES/EBUSY on /dev/ublkcN */
	unsigned hook_mask;  /* 1 << UBLK_IO_OP_*: ops handed to the Lua thread */
	int inline_lua;      /* the Lua thread owns the queue rings (handlers, or hooks on a C target) */
	struct ublk_target_config tgt;
};

/* Open /dev/ublkcN, the target and the queues. 0, or -errno with *why naming the step. */
int ublk_server_new(struct ublk_server **out, const struct ublk_server_config *cfg, const char **why);

/* Start the queue threads (pinned to cpus[q] where given) and return once every queue has sent
 * FETCH_REQ for every tag, or one failed: 0 or -errno with *why. */
int ublk_server_start(struct ublk_server *s, const cpu_set_t *cpus, const int *has_cpus, const char **why);

/* Ask every queue to stop, then join the threads. Idempotent. */
void ublk_server_stop(struct ublk_server *s);

/* Stop and release everything. */
void ublk_server_free(struct ublk_server *s);

/* Number of queues still served (threads running, or inline rings the kernel has not ended). */
int ublk_server_alive(struct ublk_server *s);

/* For queue threads (and the Lua thread's pump, for inline rings the kernel ended). */
void ublk_server_queue_ready(struct ublk_server *s, int err, const char *why);
void ublk_server_queue_ended(struct ublk_server *s);

#endif
