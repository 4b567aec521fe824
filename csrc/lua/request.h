/*
 * ublk.request (request.c): what a handler sees, one userdata per request, also its buffer
 * (req.buf). Uservalue 1: the device, so d stays valid memory as long as the request is referenced.
 */
#ifndef LUA_UBLK_REQUEST_H
#define LUA_UBLK_REQUEST_H

#include <errno.h>
#include <lua.h>
#include <stdint.h>

#include "bridge.h"
#include "device.h"

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

/* Push the metatable; then for each taken request, a new ublk.request (the device userdata at
 * index dev, the metatable at mt). Returns it. */
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
/* Answer v with what the n values from index first (a handler's return) mean (doc/api.md "What a
 * handler returns"): 0, or -1 when they mean nothing, with EIO answered and a message pushed. Never
 * raises. */
int ublk_request_answer(lua_State *L, struct request_handle *v, int first, int n);

#endif
