/*
 * The bridge: the Lua thread's side of a device's requests (a handler, or hooks on a C target):
 * which requests Lua holds, the answers waiting to go back, and the pollable descriptor of the
 * device's Lua work (epoll: the hand-off's knock, the rings, the handlers' timer and descriptors).
 *
 * A request is held from the moment it is taken until it is answered. Each (queue, tag) slot has a
 * generation that moves on when the request is answered, so a request or buffer kept past that
 * raises a clear error instead of touching a buffer the kernel has reused. Answers collect per
 * queue while a dispatch runs and go back in one batch at its end: to the queue thread (one lock,
 * one knock), or, for Lua-owned rings, to the kernel in one submit (rings.h).
 *
 * The bridge is malloc'd and belongs to the device (device.h); requests reach it through their
 * device, whose bridge pointer is NULL once freed.
 */
#ifndef LUA_UBLK_BRIDGE_H
#define LUA_UBLK_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/server.h"

/* epoll data of the bridge's descriptors: what woke a dispatch (the low 32 bits: a queue or an fd) */
#define EV_HANDOFF (1ULL << 32)
#define EV_TIMER (2ULL << 32)
#define EV_FD (3ULL << 32)
#define EV_RING (4ULL << 32)

struct bridge_slot {
	uint32_t gen;
	uint8_t held;
};

struct ublk_bridge {
	struct ublk_server *srv; /* NULL once the server is freed */
	int nr_queues;
	int depth;
	int hooks_pass;         /* hooks on a C target: returning nothing passes the request on */
	int epfd;               /* dev:fd() */
	int timerfd;
	int batching;           /* dispatches in progress (they nest): answers wait for their flush */
	int edge_unanswered;    /* a poll saw a knock's edge and no take followed it yet */
	struct bridge_slot *slots;       /* q * depth + tag */
	struct ublk_handoff_req *taken;  /* the batch a dispatch runs: taken[pos..n) still to run */
	size_t pos, n;
	struct ublk_handoff_req *closing; /* scratch for abandon */
	struct ublk_remote_done *done;   /* q * depth + i: answers not yet sent */
	int *nr_done;
	uint64_t requests, batches, errors, passed; /* batches: takes that found requests */
	uint64_t started;       /* handlers started by the run in progress (each run puts it back) */
};

static inline struct bridge_slot *bridge_slot(struct ublk_bridge *b, int q_id, int tag)
{
	return &b->slots[q_id * b->depth + tag];
}

static inline int bridge_live(struct ublk_bridge *b, int q_id, int tag, uint32_t gen)
{
	const struct bridge_slot *s;

	if (!b || !b->srv)
		return 0;
	s = bridge_slot(b, q_id, tag);
	return s->held && s->gen == gen;
}

/* A bridge for a server just made with hooks (its hook_mask), watching the hand-off: 0 or -errno. */
int ublk_bridge_new(struct ublk_bridge **out, struct ublk_server *s, int hooks_pass);
/* Once the server started: watch its Lua-owned rings too (nothing to do with queue threads). */
int ublk_bridge_watch_rings(struct ublk_bridge *b);

/* Take what is there for Lua (the hand-off's list and what the rings hold) into taken, held from
 * now on, when the last batch is done; how many are still to run. */
size_t ublk_bridge_take(struct ublk_bridge *b);

/* The request in (q_id, tag) is answered: result, or passed on to the C target. */
void ublk_bridge_answer(struct ublk_bridge *b, int q_id, int tag, int result, int pass);
/* Send every answer collected so far, one batch per queue. */
void ublk_bridge_flush(struct ublk_bridge *b);

/* Answer -EIO for every request Lua holds or has not taken, and refuse new ones (answered EIO
 * without Lua from then on): what a stop needs before it waits. How many were answered. */
int ublk_bridge_abandon(struct ublk_bridge *b);

/* After the server is freed (every request and buffer still referenced turns stale, descriptors
 * close); then, at the device's end, free. */
void ublk_bridge_detach(struct ublk_bridge *b);
void ublk_bridge_free(struct ublk_bridge *b);

#endif
