/*
 * What a handler sees (bridge.h): the request, a plain table (req.op, offset, length, buf; flags,
 * fua, queue, tag, received through __index) so that reading its fields costs a handler no C call, and its handle, a ublk.buffer
 * userdata that is also req.buf for reads and writes: a view of the request's own buffer in the
 * queue's memory, valid until the request is answered.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "bridge.h"
#include "lua_ublk.h"

#define UBLK_REQUEST_MT "ublk.request"
#define UBLK_BUFFER_MT "ublk.buffer"

static const char *const op_names[] = { "read", "write", "flush", "discard", "write_same", "write_zeroes" };

const char *ublk_op_name(unsigned op)
{
	return op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : "unknown";
}

static int live(const struct request_handle *v)
{
	return bridge_live(request_bridge(v), v->q_id, v->tag, v->gen);
}

/* The key of a request table's handle: req.buf is the same object, but a handler may overwrite
 * that field; this one it cannot reach. */
static char handle_key; /* only its address matters */

struct request_handle *ublk_request_push(lua_State *L, int dev, int mts, const struct ublk_handoff_req *h)
{
	unsigned op = ublksrv_get_op(&h->iod);
	struct device_handle *d = lua_touserdata(L, dev);
	struct ublk_bridge *b = d->bridge;
	struct request_handle *v;

	/* Only what nearly every handler reads is a field; flags, fua, queue, tag and received come
	 * from __index, so a request costs few calls to make. */
	lua_createtable(L, 0, 5);
	v = lua_newuserdatauv(L, sizeof(*v), 1);
	v->d = d;
	v->gen = bridge_slot(b, h->q_id, h->tag)->gen;
	v->q_id = h->q_id;
	v->tag = h->tag;
	v->op = (uint8_t)op;
	v->deferred = 0;
	v->flags = h->iod.op_flags;
	v->offset = (uint64_t)h->iod.start_sector << 9;
	v->received_ns = h->received_ns;
	v->span = (uint64_t)h->iod.nr_sectors << 9;
	v->length = (op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE) ? (uint32_t)v->span : 0;
	v->data = ublk_queue_buf(b->srv->queues[h->q_id], h->tag); /* only called while served */
	lua_pushvalue(L, mts);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, dev);
	lua_setiuservalue(L, -2, 1);
	lua_pushlightuserdata(L, &handle_key);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	lua_setfield(L, -2, "buf");
	lua_pushstring(L, ublk_op_name(op));
	lua_setfield(L, -2, "op");
	lua_pushinteger(L, (lua_Integer)v->offset);
	lua_setfield(L, -2, "offset");
	/* discard and write_zeroes have a length too, with no data */
	lua_pushinteger(L, (lua_Integer)v->span);
	lua_setfield(L, -2, "length");
	lua_pushvalue(L, mts + 1);
	lua_setmetatable(L, -2);
	return v;
}

void ublk_request_metatables(lua_State *L)
{
	luaL_getmetatable(L, UBLK_BUFFER_MT);
	luaL_getmetatable(L, UBLK_REQUEST_MT);
}

/* Whether the value at idx is a request's handle: its metatable is upvalue 1 of every function
 * here. Cheaper than luaL_checkudata's registry lookup, and these run for every block a handler
 * copies. */
static int is_handle(lua_State *L, int idx)
{
	int same;

	if (!lua_touserdata(L, idx) || !lua_getmetatable(L, idx))
		return 0;
	same = lua_rawequal(L, -1, lua_upvalueindex(1));
	lua_pop(L, 1);
	return same;
}

/* The handle of the request table at index 1. The table keeps it alive while we use it. */
static struct request_handle *handle_of(lua_State *L, const char *what)
{
	struct request_handle *v;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushlightuserdata(L, &handle_key);
	lua_rawget(L, 1);
	v = is_handle(L, -1) ? lua_touserdata(L, -1) : NULL;
	if (!v)
		luaL_error(L, "%s: not a ublk request", what);
	lua_pop(L, 1);
	return v;
}

/*
 * What a handler's values mean (README "Handlers"): nothing (or nil): success, or for hooks on a C
 * target: pass; true: success (a hook answered the request itself); "pass": to the C target (hooks
 * only); a number n: n bytes done (a short read or write: the kernel asks again for the rest;
 * negative: -errno); a string (read): the data; nil or false, then an errno name ("EIO") or number:
 * failure. Returns 0 with *result and *pass set, or pushes a message saying what is wrong with the
 * values (the request then fails with EIO). Never raises: no metamethod is called.
 */
int ublk_request_result(lua_State *L, struct request_handle *r, int first, int n, int *result, int *pass)
{
	int success = (r->op == UBLK_IO_OP_READ || r->op == UBLK_IO_OP_WRITE) ? (int)r->length : 0;
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

/** req:done(...) -- answer the request now, with what a handler would return. Raises if already answered. */
static int l_request_done(lua_State *L)
{
	struct request_handle *v = handle_of(L, "req:done");
	int result, pass;

	if (!live(v))
		return luaL_error(L, "req:done: the request was already answered (%s at offset %I)", ublk_op_name(v->op),
				  (lua_Integer)v->offset);
	if (ublk_request_result(L, v, 2, lua_gettop(L) - 1, &result, &pass) < 0) {
		ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, -EIO, 0);
		return luaL_error(L, "req:done: %s", lua_tostring(L, -1));
	}
	ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, result, pass);
	return 0;
}

/**
 * req:_finish(ok, ...) -> nil | message
 * The scheduler's: the handler returned (ok) or raised (not ok: EIO). Nothing happens when the
 * request was answered or deferred meanwhile. A message says what was wrong with the values.
 */
static int l_request_finish(lua_State *L)
{
	struct request_handle *v = handle_of(L, "req:_finish");
	int ok = lua_toboolean(L, 2), result, pass;

	if (!live(v) || (ok && v->deferred))
		return 0;
	if (!ok) {
		ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, -EIO, 0);
		return 0;
	}
	if (ublk_request_result(L, v, 3, lua_gettop(L) - 2, &result, &pass) < 0) {
		ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, -EIO, 0);
		return 1;
	}
	ublk_bridge_answer(request_bridge(v), v->q_id, v->tag, result, pass);
	return 0;
}

/** req:defer() -> req: the handler's return no longer answers it; req:done(...) will. */
static int l_request_defer(lua_State *L)
{
	struct request_handle *v = handle_of(L, "req:defer");

	if (!live(v))
		return luaL_error(L, "req:defer: the request was already answered");
	v->deferred = 1;
	lua_settop(L, 1);
	return 1;
}

/** req:answered() -> whether the request was answered (its buffer is then gone) */
static int l_request_answered(lua_State *L)
{
	lua_pushboolean(L, !live(handle_of(L, "req:answered")));
	return 1;
}

/* The fields few handlers read, and the methods. */
static int l_request_index(lua_State *L)
{
	struct request_handle *v = handle_of(L, "req");
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "flags") == 0)
		lua_pushinteger(L, v->flags);
	else if (k && strcmp(k, "fua") == 0)
		lua_pushboolean(L, (v->flags & UBLK_IO_F_FUA) != 0);
	else if (k && strcmp(k, "queue") == 0)
		lua_pushinteger(L, v->q_id);
	else if (k && strcmp(k, "tag") == 0)
		lua_pushinteger(L, v->tag);
	else if (k && strcmp(k, "received") == 0) /* seconds, on ublk.now()'s clock */
		lua_pushnumber(L, (double)v->received_ns / 1e9);
	else
		lua_rawget(L, lua_upvalueindex(2)); /* the methods */
	return 1;
}

static int l_request_tostring(lua_State *L)
{
	struct request_handle *v = handle_of(L, "tostring(req)");

	lua_pushfstring(L, "ublk.request (%s offset %I length %I, queue %d tag %d%s)", ublk_op_name(v->op),
			(lua_Integer)v->offset, (lua_Integer)v->length, v->q_id, v->tag, live(v) ? "" : ", answered");
	return 1;
}

/* ---- buffers ---- */

static struct request_handle *check_buffer(lua_State *L, const char *what)
{
	struct request_handle *v = is_handle(L, 1) ? lua_touserdata(L, 1) : NULL;

	if (!v)
		luaL_typeerror(L, 1, UBLK_BUFFER_MT);

	if (!bridge_live(request_bridge(v), v->q_id, v->tag, v->gen))
		luaL_error(L, "%s: the request was already answered: its buffer is gone", what);
	return v;
}

/* offset and length within the buffer, as 0-based byte offsets */
static size_t check_range(lua_State *L, const struct request_handle *v, int arg, lua_Integer off, lua_Integer len,
			  const char *what)
{
	if (off < 0 || off > (lua_Integer)v->length)
		luaL_error(L, "%s: offset %I is outside the buffer (0 to %I)", what, off, (lua_Integer)v->length);
	if (len < 0 || len > (lua_Integer)v->length - off)
		luaL_error(L, "%s: %I bytes at offset %I run past the buffer's %I", what, len, off,
			   (lua_Integer)v->length);
	(void)arg;
	return (size_t)off;
}

/** buf:read([offset = 0 [, length = #buf - offset]]) -> string */
static int l_buffer_read(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "buf:read");
	lua_Integer off = luaL_optinteger(L, 2, 0);
	lua_Integer len = luaL_optinteger(L, 3, (lua_Integer)v->length - off);

	check_range(L, v, 2, off, len, "buf:read");
	lua_pushlstring(L, (const char *)v->data + off, (size_t)len);
	return 1;
}

/** buf:write(offset, string [, i [, j]]) -> bytes written: string:sub(i, j) goes in at offset */
static int l_buffer_write(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "buf:write");
	lua_Integer off = luaL_checkinteger(L, 2);
	size_t slen;
	const char *s = luaL_checklstring(L, 3, &slen);
	lua_Integer i = luaL_optinteger(L, 4, 1);
	lua_Integer j = luaL_optinteger(L, 5, (lua_Integer)slen);

	if (i < 1)
		i = 1;
	if (j > (lua_Integer)slen)
		j = (lua_Integer)slen;
	if (j < i) {
		lua_pushinteger(L, 0);
		return 1;
	}
	check_range(L, v, 2, off, j - i + 1, "buf:write");
	memcpy(v->data + off, s + i - 1, (size_t)(j - i + 1));
	lua_pushinteger(L, j - i + 1);
	return 1;
}

/** buf:fill(byte [, offset = 0 [, length]]) */
static int l_buffer_fill(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "buf:fill");
	lua_Integer byte = luaL_checkinteger(L, 2);
	lua_Integer off = luaL_optinteger(L, 3, 0);
	lua_Integer len = luaL_optinteger(L, 4, (lua_Integer)v->length - off);

	luaL_argcheck(L, byte >= 0 && byte <= 255, 2, "a byte is 0 to 255");
	check_range(L, v, 3, off, len, "buf:fill");
	memset(v->data + off, (int)byte, (size_t)len);
	return 0;
}

static int l_buffer_len(lua_State *L)
{
	struct request_handle *v = check_buffer(L, "#buf");

	lua_pushinteger(L, v->length);
	return 1;
}

static int l_buffer_tostring(lua_State *L)
{
	struct request_handle *v = is_handle(L, 1) ? lua_touserdata(L, 1) : NULL;

	if (!v)
		return luaL_typeerror(L, 1, UBLK_BUFFER_MT);

	lua_pushfstring(L, "ublk.buffer (%I bytes%s)", (lua_Integer)v->length,
			bridge_live(request_bridge(v), v->q_id, v->tag, v->gen) ? "" : ", gone");
	return 1;
}

static const luaL_Reg request_methods[] = {
	{ "done", l_request_done },
	{ "defer", l_request_defer },
	{ "answered", l_request_answered },
	{ "_finish", l_request_finish },
	{ NULL, NULL },
};

static const luaL_Reg buffer_methods[] = {
	{ "read", l_buffer_read },
	{ "write", l_buffer_write },
	{ "fill", l_buffer_fill },
	{ NULL, NULL },
};

void ublk_lua_open_request(lua_State *L)
{
	int buffer_mt;

	luaL_newmetatable(L, UBLK_BUFFER_MT);
	buffer_mt = lua_gettop(L);
	lua_pushvalue(L, buffer_mt);
	lua_pushcclosure(L, l_buffer_len, 1);
	lua_setfield(L, buffer_mt, "__len");
	lua_pushvalue(L, buffer_mt);
	lua_pushcclosure(L, l_buffer_tostring, 1);
	lua_setfield(L, buffer_mt, "__tostring");
	luaL_newlibtable(L, buffer_methods);
	lua_pushvalue(L, buffer_mt);
	luaL_setfuncs(L, buffer_methods, 1);
	lua_setfield(L, buffer_mt, "__index");

	luaL_newmetatable(L, UBLK_REQUEST_MT);
	lua_pushvalue(L, buffer_mt);
	lua_pushcclosure(L, l_request_tostring, 1);
	lua_setfield(L, -2, "__tostring");
	luaL_newlibtable(L, request_methods);
	lua_pushvalue(L, buffer_mt);
	luaL_setfuncs(L, request_methods, 1);
	lua_pushvalue(L, buffer_mt);
	lua_insert(L, -2);
	lua_pushcclosure(L, l_request_index, 2); /* the handle's metatable, then the methods */
	lua_setfield(L, -2, "__index");
	lua_pop(L, 2);
}
