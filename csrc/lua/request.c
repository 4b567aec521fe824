/***
 * What a handler gets: the request (a `ublk.request` userdata) and its buffer, `req.buf`.
 *
 * Its fields, read-only, and still readable once it is answered: `op` ("read", "write", "flush",
 * "discard", "write_zeroes"), `offset` and `length` in bytes, `buf`, `flags` (the kernel's
 * UBLK_IO_F_*), `fua`, `queue`, `tag`, `received` (when the server got it, on `ublk.now()`'s clock).
 *
 * `req.buf` is the request itself seen as a view of the request's own buffer in the queue's memory,
 * not a copy (`#buf` is its length; 0 for flush, discard and write-zeroes). It is valid until the
 * request is answered; then its methods raise "the request was already answered: its buffer is gone".
 * @module ublk.request
 */

/* One object per request, not a table and a buffer: making it costs one allocation and four API
 * calls, which was most of what a request cost the Lua thread beyond its handler. */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "request.h"
#include "module.h"
#include "util.h"

#define UBLK_REQUEST_MT "ublk.request"

/* a request's uservalue: its device */
enum { UV_DEVICE = 1, NR_UV = 1 };

struct request_handle *ublk_request_push(lua_State *L, int dev, int mt, const struct ublk_handoff_req *h)
{
	unsigned op = ublksrv_get_op(&h->iod);
	struct device_handle *d = lua_touserdata(L, dev);
	struct ublk_bridge *b = d->bridge;
	/* read before allocating: the allocation may run a finalizer that stops the device, and then
	 * the generation read here is already stale, so the request is born answered */
	uint32_t gen = bridge_slot(b, h->q_id, h->tag)->gen;
	unsigned char *data = ublk_queue_buf(b->srv->queues[h->q_id], h->tag); /* only called while served */
	struct request_handle *v = lua_newuserdatauv(L, sizeof(*v), NR_UV);

	v->d = d;
	v->gen = gen;
	v->q_id = h->q_id;
	v->tag = h->tag;
	v->op = (uint8_t)op;
	v->deferred = 0;
	v->flags = h->iod.op_flags;
	v->offset = (uint64_t)h->iod.start_sector << 9;
	v->received_ns = h->received_ns;
	v->span = (uint64_t)h->iod.nr_sectors << 9; /* discard and write_zeroes have a length too, with no data */
	v->length = (op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE) ? (uint32_t)v->span : 0;
	v->data = data;
	lua_pushvalue(L, mt);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, dev);
	lua_setiuservalue(L, -2, UV_DEVICE);
	return v;
}

void ublk_request_metatable(lua_State *L)
{
	luaL_getmetatable(L, UBLK_REQUEST_MT);
}

/* Whether the value at idx is a userdata whose metatable is upvalue 1 of the running function
 * (every function here has its type's metatable there): cheaper than luaL_checkudata's registry
 * lookup, and these run for every block a handler copies. */
static void *is_ours(lua_State *L, int idx)
{
	void *p = lua_touserdata(L, idx);
	int same;

	if (!p || !lua_getmetatable(L, idx))
		return NULL;
	same = lua_rawequal(L, -1, lua_upvalueindex(1));
	lua_pop(L, 1);
	return same ? p : NULL;
}

static struct request_handle *check_request(lua_State *L, const char *what)
{
	struct request_handle *v = is_ours(L, 1);

	if (!v)
		luaL_error(L, "%s: not a ublk request", what);
	return v;
}

/*
 * What a handler's values mean (doc/api.md "What a handler returns"): nothing (or nil): success, or for hooks on a C
 * target: pass; true: success (a hook answered the request itself); "pass": to the C target (hooks
 * only); a number n: n bytes done (a short read or write: the kernel asks again for the rest;
 * negative: -errno); a string (read): the data; nil or false, then an errno name ("EIO") or number:
 * failure. Returns 0 with *result and *pass set, or pushes a message saying what is wrong with the
 * values (the request then fails with EIO). Never raises: no metamethod is called.
 */
static int request_result(lua_State *L, struct request_handle *r, int first, int n, int *result, int *pass)
{
	int success = (int)r->length; /* 0 for ops without data */
	int t = n > 0 ? lua_type(L, first) : LUA_TNONE;

	*pass = 0;
	*result = success;
	if (t == LUA_TNONE || (t == LUA_TNIL && (n < 2 || lua_isnil(L, first + 1)))) {
		*pass = request_bridge(r)->hooks_pass;
		return 0;
	}
	if (t == LUA_TBOOLEAN && lua_toboolean(L, first))
		return 0;
	if (t == LUA_TNIL || t == LUA_TBOOLEAN) { /* nil/false, why */
		int e = 0;

		if (n >= 2 && lua_type(L, first + 1) == LUA_TSTRING)
			e = ublk_errno_by_name(lua_tostring(L, first + 1));
		else if (n >= 2 && lua_isinteger(L, first + 1))
			e = (int)lua_tointeger(L, first + 1);
		if (e < 0)
			e = -e;
		if (e > 0 && e < 4096) {
			*result = -e;
			return 0;
		}
		if (n >= 2 && lua_type(L, first + 1) == LUA_TSTRING)
			lua_pushfstring(L, "failed with \"%s\", which is not an errno name: answered EIO",
					lua_tostring(L, first + 1));
		else if (n >= 2 && !lua_isnil(L, first + 1))
			lua_pushfstring(L, "failed with %s %s, which is not an errno: answered EIO",
					luaL_typename(L, first + 1), lua_isnumber(L, first + 1) ? lua_tostring(L, first + 1) : "");
		else
			lua_pushliteral(L, "failed without saying why (return nil, \"EIO\" or another errno name): answered EIO");
		return -1;
	}
	if (t == LUA_TNUMBER) {
		lua_Integer v;

		if (!lua_isinteger(L, first)) {
			lua_pushfstring(L, "returned %f, not a whole number of bytes: answered EIO", lua_tonumber(L, first));
			return -1;
		}
		v = lua_tointeger(L, first);
		if (v >= 0 && v <= (lua_Integer)r->span) { /* bytes done; ops without data answer 0 */
			*result = r->length ? (int)v : 0;
			return 0;
		}
		if (v < 0 && v > -4096) {
			*result = (int)v;
			return 0;
		}
		lua_pushfstring(L, "returned %I bytes for a request of %I: answered EIO", v, (lua_Integer)r->span);
		return -1;
	}
	if (t == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, first, &len);

		if (len == 4 && memcmp(s, "pass", 4) == 0) {
			if (!request_bridge(r)->hooks_pass) {
				lua_pushliteral(L, "returned \"pass\", which only hooks on a C target may: answered EIO");
				return -1;
			}
			*pass = 1;
			return 0;
		}
		if (r->op != UBLK_IO_OP_READ) {
			lua_pushfstring(L, "returned a string for a %s request (only read may): answered EIO", ublk_op_name(r->op));
			return -1;
		}
		if (len != r->length) {
			lua_pushfstring(L, "returned a string of %I bytes for a read of %I: answered EIO",
					(lua_Integer)len, (lua_Integer)r->length);
			return -1;
		}
		memcpy(r->data, s, len);
		return 0;
	}
	lua_pushfstring(L, "returned a %s: answered EIO", luaL_typename(L, first));
	return -1;
}

int ublk_request_answer(lua_State *L, struct request_handle *v, int first, int n)
{
	int result, pass;

	int ret = request_result(L, v, first, n, &result, &pass);

	if (ret < 0) {
		result = -EIO;
		pass = 0;
	}
	ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, result, pass);
	return ret;
}

/***
 * Answer the request now, with what a handler would return (doc/api.md, "What a handler returns").
 * Raises if it was answered already.
 * @function req:done
 * @param ... nothing, true, a byte count, a string (reads), or nil and an errno name or number
 */
static int l_request_done(lua_State *L)
{
	struct request_handle *v = check_request(L, "req:done");

	if (!request_live(v))
		return luaL_error(L, "req:done: the request was already answered (%s at offset %I)", ublk_op_name(v->op),
				  (lua_Integer)v->offset);
	if (ublk_request_answer(L, v, 2, lua_gettop(L) - 1) < 0)
		return luaL_error(L, "req:done: %s", lua_tostring(L, -1));
	return 0;
}

/** fail_request(req): the scheduler's, for a runner that failed after its handler waited: EIO,
 * unless answered meanwhile (a handler's own return or error is answered by its runner, in C). */
static int l_request_fail(lua_State *L)
{
	struct request_handle *v = check_request(L, "fail_request");

	request_fail(v);
	return 0;
}

/***
 * Keep the request past its handler: the handler's return no longer answers it; `req:done(...)` will.
 * Raises if it was answered already.
 * @function req:defer
 * @return req
 */
static int l_request_defer(lua_State *L)
{
	struct request_handle *v = check_request(L, "req:defer");

	if (!request_live(v))
		return luaL_error(L, "req:defer: the request was already answered");
	v->deferred = 1;
	lua_settop(L, 1);
	return 1;
}

/***
 * Whether the request was answered (its buffer is then gone).
 * @function req:answered
 * @treturn boolean
 */
static int l_request_answered(lua_State *L)
{
	lua_pushboolean(L, !request_live(check_request(L, "req:answered")));
	return 1;
}

/* __index: the fields, then the methods (upvalue 2). Fields stay readable once answered (a failure
 * report names the op and offset); only the buffer and the methods that answer check. Its first
 * argument is checked although __metatable hides the metatable: debug.getmetatable still reaches
 * this function, and the check (is_ours) costs one metatable comparison. */
static int l_request_index(lua_State *L)
{
	struct request_handle *v = check_request(L, "req.field");
	size_t len = 0;
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;

	switch (len) {
	case 2:
		if (memcmp(k, "op", 2) == 0)
			return lua_pushstring(L, ublk_op_name(v->op)), 1;
		break;
	case 3:
		if (memcmp(k, "buf", 3) == 0) /* the request itself, as its buffer */
			return lua_settop(L, 1), 1;
		if (memcmp(k, "fua", 3) == 0)
			return lua_pushboolean(L, (v->flags & UBLK_IO_F_FUA) != 0), 1;
		if (memcmp(k, "tag", 3) == 0)
			return lua_pushinteger(L, v->tag), 1;
		break;
	case 5:
		if (memcmp(k, "flags", 5) == 0)
			return lua_pushinteger(L, v->flags), 1;
		if (memcmp(k, "queue", 5) == 0)
			return lua_pushinteger(L, v->q_id), 1;
		break;
	case 6:
		if (memcmp(k, "offset", 6) == 0)
			return lua_pushinteger(L, (lua_Integer)v->offset), 1;
		if (memcmp(k, "length", 6) == 0)
			return lua_pushinteger(L, (lua_Integer)v->span), 1;
		break;
	case 8:
		if (memcmp(k, "received", 8) == 0) /* seconds, on ublk.now()'s clock */
			return lua_pushnumber(L, (double)v->received_ns / 1e9), 1;
		break;
	}
	lua_rawget(L, lua_upvalueindex(2));
	return 1;
}

static int l_request_newindex(lua_State *L)
{
	return luaL_error(L, "req.%s: a request's fields cannot be set (keep what you need in a table keyed by req)",
			  lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2));
}

static int l_request_tostring(lua_State *L)
{
	struct request_handle *v = check_request(L, "tostring(req)");

	lua_pushfstring(L, "ublk.request (%s offset %I length %I, queue %d tag %d%s)", ublk_op_name(v->op),
			(lua_Integer)v->offset, (lua_Integer)v->span, v->q_id, v->tag, request_live(v) ? "" : ", answered");
	return 1;
}

/* ---- buffers ---- */

static struct request_handle *check_buffer(lua_State *L, const char *what)
{
	struct request_handle *v = is_ours(L, 1);

	if (!v)
		luaL_typeerror(L, 1, "ublk request buffer (req.buf)");
	if (!request_live(v))
		luaL_error(L, "%s: the request was already answered: its buffer is gone", what);
	return v;
}

/* offset and length within the buffer, as 0-based byte offsets */
static size_t check_range(lua_State *L, const struct request_handle *v, lua_Integer off, lua_Integer len,
			  const char *what)
{
	if (off < 0 || off > (lua_Integer)v->length)
		luaL_error(L, "%s: offset %I is outside the buffer (0 to %I)", what, off, (lua_Integer)v->length);
	if (len < 0 || len > (lua_Integer)v->length - off)
		luaL_error(L, "%s: %I bytes at offset %I run past the buffer's %I", what, len, off,
			   (lua_Integer)v->length);
	return (size_t)off;
}

/***
 * Bytes of the buffer, as a string. Ranges are checked.
 * @function buf:read
 * @tparam[opt=0] integer offset
 * @tparam[opt] integer length (default: to the end)
 * @treturn string
 */
static int l_buffer_read(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "buf:read");
	lua_Integer off = luaL_optinteger(L, 2, 0);
	lua_Integer len = luaL_optinteger(L, 3, (lua_Integer)v->length - off);

	check_range(L, v, off, len, "buf:read");
	lua_pushlstring(L, (const char *)v->data + off, (size_t)len);
	return 1;
}

/***
 * Put `string:sub(i, j)` into the buffer at `offset`. Ranges are checked.
 * @function buf:write
 * @tparam integer offset
 * @tparam string string
 * @tparam[opt=1] integer i
 * @tparam[opt] integer j (default: the string's end)
 * @treturn integer bytes written
 */
static int l_buffer_write(lua_State *L)
{
	lua_Integer off = luaL_checkinteger(L, 2);
	size_t slen;
	const char *s = luaL_checklstring(L, 3, &slen);
	lua_Integer i = luaL_optinteger(L, 4, 1);
	lua_Integer j = luaL_optinteger(L, 5, (lua_Integer)slen);
	/* after the arguments: converting a number to a string may run a finalizer that stops the device */
	struct request_handle *v = check_buffer(L, "buf:write");

	if (i < 1)
		i = 1;
	if (j > (lua_Integer)slen)
		j = (lua_Integer)slen;
	if (j < i) {
		lua_pushinteger(L, 0);
		return 1;
	}
	check_range(L, v, off, j - i + 1, "buf:write");
	memcpy(v->data + off, s + i - 1, (size_t)(j - i + 1));
	lua_pushinteger(L, j - i + 1);
	return 1;
}

/***
 * Set bytes of the buffer to `byte`. Ranges are checked.
 * @function buf:fill
 * @tparam integer byte 0 to 255
 * @tparam[opt=0] integer offset
 * @tparam[opt] integer length (default: to the end)
 */
static int l_buffer_fill(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "buf:fill");
	lua_Integer byte = luaL_checkinteger(L, 2);
	lua_Integer off = luaL_optinteger(L, 3, 0);
	lua_Integer len = luaL_optinteger(L, 4, (lua_Integer)v->length - off);

	luaL_argcheck(L, byte >= 0 && byte <= 255, 2, "a byte is 0 to 255");
	check_range(L, v, off, len, "buf:fill");
	memset(v->data + off, (int)byte, (size_t)len);
	return 0;
}

static int l_buffer_len(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "#buf");

	lua_pushinteger(L, v->length);
	return 1;
}

static const luaL_Reg request_methods[] = {
	{ "done", l_request_done },
	{ "defer", l_request_defer },
	{ "answered", l_request_answered },
	{ "read", l_buffer_read }, /* req.buf is req */
	{ "write", l_buffer_write },
	{ "fill", l_buffer_fill },
	{ NULL, NULL },
};

/* Each function gets its type's metatable as upvalue 1 (is_ours). */
static void set_closure(lua_State *L, int mt, lua_CFunction f, const char *name)
{
	lua_pushvalue(L, mt);
	lua_pushcclosure(L, f, 1);
	lua_setfield(L, mt, name);
}

void ublk_lua_open_request(lua_State *L)
{
	int mt;

	luaL_newmetatable(L, UBLK_REQUEST_MT);
	mt = lua_gettop(L);
	set_closure(L, mt, l_request_tostring, "__tostring");
	set_closure(L, mt, l_request_newindex, "__newindex");
	set_closure(L, mt, l_buffer_len, "__len");
	lua_pushvalue(L, mt);
	luaL_newlibtable(L, request_methods);
	lua_pushvalue(L, mt);
	luaL_setfuncs(L, request_methods, 1);
	lua_pushcclosure(L, l_request_index, 2); /* its metatable, the methods */
	lua_setfield(L, mt, "__index");
	lua_pushliteral(L, UBLK_REQUEST_MT);
	lua_setfield(L, mt, "__metatable"); /* getmetatable(req) cannot reach __index (above) */
	lua_pop(L, 1);
}

void ublk_lua_open_request_internals(lua_State *L)
{
	luaL_getmetatable(L, UBLK_REQUEST_MT);
	lua_pushcclosure(L, l_request_fail, 1);
	lua_setfield(L, -2, "fail_request");
}
