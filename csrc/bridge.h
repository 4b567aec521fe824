/*
 * The Lua thread's side of hooked requests (lua_bridge.c, lua_request.c): which requests Lua holds,
 * the answers waiting to go back, and the pollable descriptor of the device's Lua work.
 *
 * A request is held from the moment it is taken until it is answered. Each (queue, tag) slot has a
 * generation that moves on when the request is answered, so a request or buffer kept past that
 * raises a clear error instead of touching a buffer the kernel has reused. Answers collect per
 * queue while a dispatch runs and go back in one batch at _flush: to the queue's thread (one lock,
 * one knock), or, for a device whose rings the Lua thread serves itself (server.h inline_lua), to
 * the kernel in one submit, with the C target's SQEs for what hooks passed. Those rings are reaped straight into the batch _run takes, so everything
 * after the take is the same for both; what a dispatch leaves in a ring keeps its fd readable.
 *
 * The bridge is malloc'd and belongs to the device; requests and buffers reach it through the
 * device userdata (their uservalue keeps it), whose bridge pointer is NULL once freed: a request
 * a finalizer resurrects after the device's own __gc finds it dead, not freed memory.
 */
#ifndef LUA_UBLK_BRIDGE_H
#define LUA_UBLK_BRIDGE_H

#include <errno.h>
#include <lua.h>
#include <stdint.h>

#include "lua_ublk.h"
#include "server.h"

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
	int batching;           /* dispatches in progress (they nest): answers wait for their _flush */
	int edge_unanswered;    /* _poll saw a knock's edge and no take followed it yet */
	struct bridge_slot *slots;       /* q * depth + tag */
	struct ublk_handoff_req *taken;  /* the batch _run works through: taken[pos..n) still to run */
	size_t pos, n;
	struct ublk_handoff_req *closing; /* scratch for abandon */
	struct ublk_remote_done *done;   /* q * depth + i: answers not yet sent */
	int *nr_done;
	uint64_t requests, batches, errors, passed; /* batches: takes that found requests */
	uint64_t started;       /* handlers started by the _run in progress (each _run puts it back) */
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

/* The request in (q_id, tag) is answered: result, or passed on to the C target. */
void ublk_bridge_answer(struct ublk_bridge *b, int q_id, int tag, int result, int pass);

/* A request (ublk.request userdata), also its buffer (req.buf). Uservalue 1: the device, so d stays
 * valid memory as long as the request is referenced. */
struct request_handle {
	struct device_handle *d;
	uint32_t gen;
	uint16_t q_id, tag;
	uint8_t op;
	uint8_t deferred;
	uint32_t flags;
	uint32_t length;          /* of its data: 0 for ops without (flush, discard, write_zeroes) */
	uint64_t span;            /* the bytes it covers: req.length */
	uint64_t offset;
	uint64_t received_ns;
	unsigned char *data;
};

/* lua_request.c: push the metatable of ublk.request; then for each taken request, a new
 * ublk.request (the device userdata at index dev, the metatable at mt). Returns it. */
void ublk_request_metatable(lua_State *L);
struct request_handle *ublk_request_push(lua_State *L, int dev, int mt, const struct ublk_handoff_req *h);
/* The bridge of a request's device, or NULL once the device let it go. */
static inline struct ublk_bridge *request_bridge(const struct request_handle *v)
{
	return v->d->bridge;
}
/* Whether v is still to be answered (its buffer is still its own). */
static inline int request_live(const struct request_handle *v)
{
	return bridge_live(request_bridge(v), v->q_id, v->tag, v->gen);
}
/* Answer v with EIO, unless it was answered already: for handlers that failed or will never end. */
static inline void request_fail(const struct request_handle *v)
{
	if (request_live(v))
		ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, -EIO, 0);
}
/* Answer v with what the n values from index first (a handler's return) mean (README "What a
 * handler returns"): 0, or -1 when they mean nothing, with EIO answered and a message pushed. Never
 * raises. */
int ublk_request_answer(lua_State *L, struct request_handle *v, int first, int n);
const char *ublk_op_name(unsigned op);
void ublk_lua_open_request(lua_State *L);

#endif
