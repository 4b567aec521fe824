/*
 * The hand-off of requests from the queue threads to the Lua thread. Queue threads never run Lua:
 * a request whose op is hooked is copied (queue, tag, descriptor) into a batch of the queue's own
 * during one wake-up, and the whole batch joins the shared list under one lock before the thread
 * sleeps again; the first batch into an empty list knocks once on an eventfd the Lua thread polls
 * (edge-triggered: the Lua side never reads the counter, a knock is an edge; the queue thread's
 * knock rides on its ring's next submit, so it costs no system call of its own).
 * Answers travel back through ublk_queue_post_answers (queue.h), batched the same way. A device
 * with Lua-owned rings has no queue threads and does not use this list: the Lua thread reaps its
 * rings straight into the batch it runs (csrc/lua/rings.c).
 */
#ifndef LUA_UBLK_HANDOFF_H
#define LUA_UBLK_HANDOFF_H

#include <pthread.h>
#include <stdint.h>

#include "ublk_uapi.h"

struct ublk_handoff_req {
	uint16_t q_id;
	uint16_t tag;
	uint32_t pad;
	struct ublksrv_io_desc iod; /* as the queue thread read it */
	uint64_t received_ns;       /* CLOCK_MONOTONIC when its batch was handed over (or reaped from a Lua-owned ring) */
};

struct ublk_handoff {
	pthread_mutex_t lock;
	int efd;            /* eventfd (non-blocking): the list turned non-empty */
	__u64 knock_value;  /* 1: what a knock writes (the queue's knock SQE points here) */
	unsigned hook_mask; /* 1 << UBLK_IO_OP_*: the ops that go to Lua (read-only once serving) */
	int closed;         /* the Lua side is gone: queue threads answer hooked requests themselves */
	size_t n, cap;      /* cap: every tag of every queue */
	struct ublk_handoff_req *list;
};

/* 0 or -errno. cap is nr_queues * depth, so a push never finds the list full. */
int ublk_handoff_init(struct ublk_handoff *h, unsigned hook_mask, size_t cap);
void ublk_handoff_destroy(struct ublk_handoff *h);

static inline int ublk_handoff_hooks(const struct ublk_handoff *h, unsigned op)
{
	return op < 32 && (h->hook_mask >> op) & 1U;
}

/* Queue thread: add n requests. 1: the list was empty, so knock (write 1 to h->efd); 0: the Lua
 * side has a knock to come already; -ESHUTDOWN: the Lua side is gone (nothing was added). */
int ublk_handoff_push(struct ublk_handoff *h, const struct ublk_handoff_req *reqs, int n);

/* Lua thread: whether requests are listed, without the lock. A dispatch that ends with some still
 * listed (a handler dispatched again and consumed the knock's edge) must not wait for a knock:
 * none comes while the list is not empty. */
static inline int ublk_handoff_pending(const struct ublk_handoff *h)
{
	return __atomic_load_n(&h->n, __ATOMIC_ACQUIRE) != 0;
}

/* Knock with a plain write (the queue thread knocks through its ring where it can). */
void ublk_handoff_knock(struct ublk_handoff *h);

/* Lua thread: move every listed request into out (room for cap); how many. */
size_t ublk_handoff_take(struct ublk_handoff *h, struct ublk_handoff_req *out);

/* Lua thread: refuse further pushes and hand back what is still listed (room for cap), for answering. */
size_t ublk_handoff_close(struct ublk_handoff *h, struct ublk_handoff_req *out);

#endif
