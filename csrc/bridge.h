/*
 * The Lua thread's side of hooked requests (lua_bridge.c, lua_request.c): which requests Lua holds,
 * the answers waiting to go back, and the pollable descriptor of the device's Lua work.
 *
 * A request is held from _take until it is answered. Each (queue, tag) slot has a generation that
 * moves on when the request is answered, so a request or buffer kept past that raises a clear
 * error instead of touching a buffer the kernel has reused. Answers collect per queue while a
 * dispatch runs and go to each queue thread in one batch (one lock, one knock) at _flush.
 */
#ifndef LUA_UBLK_BRIDGE_H
#define LUA_UBLK_BRIDGE_H

#include <lua.h>
#include <stdint.h>

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
	int batching;           /* inside a dispatch: answers wait for _flush */
	struct bridge_slot *slots;       /* q * depth + tag */
	struct ublk_handoff_req *taken;  /* scratch for _take and abandon */
	struct ublk_remote_done *done;   /* q * depth + i: answers not yet sent */
	int *nr_done;
	uint64_t requests, batches, errors, passed; /* batches: takes that found requests */
};

static inline struct bridge_slot *bridge_slot(struct ublk_bridge *b, int q_id, int tag)
{
	return &b->slots[q_id * b->depth + tag];
}

static inline int bridge_live(struct ublk_bridge *b, int q_id, int tag, uint32_t gen)
{
	const struct bridge_slot *s = bridge_slot(b, q_id, tag);

	return b->srv && s->held && s->gen == gen;
}

/* The request in (q_id, tag) is answered: result, or passed on to the C target. */
void ublk_bridge_answer(struct ublk_bridge *b, int q_id, int tag, int result, int pass);

/* A request's handle, and for reads and writes its buffer. Uservalue 1: the device (keeps the
 * bridge alive as long as any request or buffer is referenced). */
struct request_handle {
	struct ublk_bridge *b;
	uint32_t gen;
	uint16_t q_id, tag;
	uint8_t op;
	uint8_t deferred;
	uint32_t flags;
	uint32_t length;
	uint64_t offset;
	uint64_t received_ns;
	unsigned char *data;
};

/* lua_request.c: push the metatables of ublk.buffer and ublk.request (in that order), then for each
 * taken request its table (a new ublk.request; the device userdata at index dev, the two
 * metatables at mts and mts + 1). Returns its handle. */
void ublk_request_metatables(lua_State *L);
struct request_handle *ublk_request_push(lua_State *L, int dev, int mts, struct ublk_bridge *b,
					 const struct ublk_handoff_req *h);
/* What the n values from index first (a handler's return) answer: 0 with *result and *pass, or -1
 * with a message pushed (the caller answers EIO). */
int ublk_request_result(lua_State *L, struct request_handle *r, int first, int n, int *result, int *pass);
const char *ublk_op_name(unsigned op);
void ublk_lua_open_request(lua_State *L);

#endif
