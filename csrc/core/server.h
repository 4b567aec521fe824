/*
 * The data plane of one device: /dev/ublkcN, the target, and its queues, each served by a queue
 * thread of its own or, without queue threads, by the owner's thread (Lua-owned rings: the owner
 * reaps and commits them, csrc/lua/rings.c). Everything here runs without Lua.
 */
#ifndef LUA_UBLK_SERVER_H
#define LUA_UBLK_SERVER_H

#include <sched.h>

#include "handoff.h"
#include "queue.h"
#include "target.h"

struct ublk_server {
	int dev_id;
	int nr_queues;
	int depth;
	int queue_threads;      /* a thread per queue; 0: Lua-owned rings */
	int cdev_fd;
	struct ublk_target tgt;
	struct ublk_handoff handoff; /* requests for the Lua thread (hooked ops only) */
	struct ublk_queue_tally tally;
	int nr_ended;           /* queues that ended, as counted by ublk_server_alive */
	int running;            /* started and not yet stopped */
	int started;            /* ublk_server_start ran: queues keep their state, so never twice */
	struct ublk_queue **queues;
};

struct ublk_server_config {
	int dev_id;
	int nr_queues;
	int depth;
	unsigned buf_size;   /* max_io_buf_bytes: one buffer per tag */
	int legacy;          /* send legacy io opcodes */
	int open_timeout_ms; /* how long to retry ENOENT/EACCES/EBUSY on /dev/ublkcN */
	unsigned hook_mask;  /* 1 << UBLK_IO_OP_*: ops handed to the Lua thread */
	int queue_threads;   /* 0: Lua-owned rings (a handler, or hooks on a C target) */
	struct ublk_target_config tgt;
};

/* Open /dev/ublkcN, the target and the queues. 0, or -errno with *why naming the step. */
int ublk_server_new(struct ublk_server **out, const struct ublk_server_config *cfg, const char **why);

/* Start the queues and return once every queue has sent FETCH_REQ for every tag, or one failed (0,
 * or -errno with *why; the queues are stopped again then). Queue threads are pinned to cpus[q]
 * where has_cpus[q]; Lua-owned rings are set up on this thread. */
int ublk_server_start(struct ublk_server *s, const cpu_set_t *cpus, const int *has_cpus, const char **why);

/* Stop the queues: queue threads are asked to stop and joined; Lua-owned rings wait for the
 * target's I/O (5 s at most) and go. Idempotent. */
void ublk_server_stop(struct ublk_server *s);

/* Stop and release everything. */
void ublk_server_free(struct ublk_server *s);

/* Number of queues still served (started, and not ended by the kernel or a stop). */
int ublk_server_alive(struct ublk_server *s);

#endif
