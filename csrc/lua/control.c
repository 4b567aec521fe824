/*
 * The control handle (ublk.control): /dev/ublk-control and its ring, shared by the devices of a Lua
 * state. Each device holds a counted reference on the ring (device.c), so the ring outlives every
 * device whatever order the collector finalizes them in.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "module.h"
#include "util.h"

struct control_handle {
	struct ublk_ctrl *ctrl; /* NULL once closed */
};

static struct control_handle *check_control(lua_State *L, int arg)
{
	struct control_handle *h = luaL_checkudata(L, arg, UBLK_CONTROL_MT);

	if (!h->ctrl)
		luaL_error(L, "attempt to use a closed ublk control handle");
	return h;
}

struct ublk_ctrl *ublk_lua_check_control(lua_State *L, int arg)
{
	return check_control(L, arg)->ctrl;
}

/** core.open_control([path = "/dev/ublk-control"]) -> control | nil, msg, errno */
static int l_open_control(lua_State *L)
{
	const char *path = luaL_optstring(L, 1, "/dev/ublk-control");
	struct control_handle *h = lua_newuserdatauv(L, sizeof(*h), 0);
	int ret;

	h->ctrl = NULL;
	luaL_setmetatable(L, UBLK_CONTROL_MT);
	ret = ublk_ctrl_open(&h->ctrl, path);
	if (ret < 0)
		return ublk_lua_fail(L, path, -ret);
	return 1;
}

/**
 * control:command(cmd_op, dev_id, queue_id, data, buf, buflen [, trace [, dev_path [, idle]]]) -> res, out, sqe
 * Sends one command with a buffer of buflen bytes (initialised from the string buf, zero-filled past
 * it; no buffer when buflen is 0). With dev_path, the buffer starts with that path and its NUL
 * (dev_path_len covers both), as GET_DEV_INFO2 and unprivileged devices want; out is still only the
 * payload. trace(sqe, buffer), when given, is called just before the SQE is submitted. res is the
 * kernel's answer (>= 0, or -errno); out the payload afterwards; sqe the 128-byte SQE.
 * idle(ring_fd), when given, is called again and again while the kernel works on the command, for
 * a caller that must keep serving meanwhile (it should poll ring_fd); an error it raises is raised
 * once the command is answered. When the ring itself fails: nil, msg, errno.
 */
static int l_command(lua_State *L)
{
	struct control_handle *h = check_control(L, 1);
	lua_Integer op = luaL_checkinteger(L, 2);
	lua_Integer dev_id = luaL_checkinteger(L, 3);
	lua_Integer queue_id = luaL_checkinteger(L, 4);
	lua_Integer data = luaL_optinteger(L, 5, 0);
	size_t inlen = 0;
	const char *in = luaL_optlstring(L, 6, NULL, &inlen);
	lua_Integer buflen = luaL_optinteger(L, 7, (lua_Integer)inlen);
	size_t pathlen = 0;
	const char *path = luaL_optlstring(L, 9, NULL, &pathlen);
	size_t prefix = path ? pathlen + 1 : 0, total;
	struct ublksrv_ctrl_cmd header;
	unsigned char sqe[128];
	luaL_Buffer out;
	char *buf = NULL;
	int ret, from_ring;

	luaL_argcheck(L, op >= 0 && op <= 0xffffffffLL, 2, "cmd_op out of range");
	luaL_argcheck(L, buflen >= 0 && (size_t)buflen >= inlen, 7, "buffer length out of range");
	luaL_argcheck(L, prefix <= 4096, 9, "device path too long");
	total = prefix + (size_t)buflen;
	luaL_argcheck(L, total <= 0xffff, 7, "buffer longer than the 16-bit len field");
	if (total > 0) {
		/* a Lua-owned buffer: freed by the collector even if the trace function raises */
		buf = luaL_buffinitsize(L, &out, total);
		memset(buf, 0, total);
		if (path)
			memcpy(buf, path, pathlen);
		if (inlen)
			memcpy(buf + prefix, in, inlen);
	}
	memset(&header, 0, sizeof(header));
	header.dev_id = (__u32)dev_id;
	header.queue_id = (__u16)queue_id;
	header.len = (__u16)total;
	header.addr = (__u64)(uintptr_t)buf;
	header.data[0] = (__u64)data;
	header.dev_path_len = (__u16)prefix;
	ublk_ctrl_prep(sqe, h->ctrl->fd, (__u32)op, &header);
	if (lua_isfunction(L, 8)) {
		lua_pushvalue(L, 8);
		lua_pushlstring(L, (const char *)sqe, sizeof(sqe));
		if (buf)
			lua_pushlstring(L, buf, total);
		else
			lua_pushnil(L);
		lua_call(L, 2, 0);
		if (!h->ctrl)
			return luaL_error(L, "the control handle was closed by the trace function");
	}
	if (lua_isfunction(L, 10)) {
		/* idle may close the handle: the ring stays until the answer is reaped */
		struct ublk_ctrl *c = h->ctrl;
		int res = 0, idle_failed = 0;
		__u64 tag = 0;

		c->refs++;
		from_ring = 1;
		ret = ublk_ctrl_submit(c, sqe, &tag);
		while (ret == 0) {
			ret = ublk_ctrl_reap(c, tag, idle_failed, &res);
			if (ret != 0 || idle_failed)
				break;
			lua_pushvalue(L, 10);
			lua_pushinteger(L, c->ring.ring_fd);
			if (lua_pcall(L, 1, 0, 0) != LUA_OK)
				idle_failed = lua_gettop(L); /* keep the error; wait without it */
		}
		ublk_ctrl_unref(c);
		if (idle_failed)
			return lua_error(L);
		if (ret > 0) {
			from_ring = 0;
			ret = res;
		}
	} else {
		ret = ublk_ctrl_run(h->ctrl, sqe, &from_ring);
	}
	if (from_ring)
		return ublk_lua_fail(L, "io_uring_submit on /dev/ublk-control", -ret);
	if (total > 0) {
		luaL_pushresultsize(&out, total); /* the buffer's box must be on top here */
		if (prefix) { /* only the payload */
			lua_pushlstring(L, lua_tostring(L, -1) + prefix, (size_t)buflen);
			lua_remove(L, -2);
		}
	} else {
		lua_pushnil(L);
	}
	lua_pushinteger(L, ret);
	lua_insert(L, -2);
	lua_pushlstring(L, (const char *)sqe, sizeof(sqe));
	return 3;
}

/** control:set_legacy(bool): devices deleted by the collector use the legacy DEL_DEV opcode. */
static int l_set_legacy(lua_State *L)
{
	struct control_handle *h = check_control(L, 1);

	h->ctrl->legacy = lua_toboolean(L, 2);
	return 0;
}

/** control:delete_command(served) -> "DEL_DEV_ASYNC" | "DEL_DEV": the delete a device gets (ctrl.h). */
static int l_delete_command(lua_State *L)
{
	struct control_handle *h = check_control(L, 1);

	if (ublk_ctrl_delete_command(h->ctrl, lua_toboolean(L, 2)) == UBLK_CMD_DEL_DEV_ASYNC)
		lua_pushliteral(L, "DEL_DEV_ASYNC");
	else
		lua_pushliteral(L, "DEL_DEV");
	return 1;
}

/** control:fd() -> the /dev/ublk-control descriptor (for the trace). */
static int l_control_fd(lua_State *L)
{
	lua_pushinteger(L, check_control(L, 1)->ctrl->fd);
	return 1;
}

static int l_control_close(lua_State *L)
{
	struct control_handle *h = luaL_checkudata(L, 1, UBLK_CONTROL_MT);

	if (h->ctrl) {
		ublk_ctrl_unref(h->ctrl);
		h->ctrl = NULL;
	}
	return 0;
}

static int l_control_tostring(lua_State *L)
{
	struct control_handle *h = luaL_checkudata(L, 1, UBLK_CONTROL_MT);

	if (h->ctrl)
		lua_pushfstring(L, "ublk.control (fd %d)", h->ctrl->fd);
	else
		lua_pushliteral(L, "ublk.control (closed)");
	return 1;
}

static const luaL_Reg control_methods[] = {
	{ "command", l_command },
	{ "set_legacy", l_set_legacy },
	{ "delete_command", l_delete_command },
	{ "fd", l_control_fd },
	{ "close", l_control_close },
	{ NULL, NULL },
};

static const luaL_Reg control_meta[] = {
	{ "__gc", l_control_close },
	{ "__close", l_control_close },
	{ "__tostring", l_control_tostring },
	{ NULL, NULL },
};

void ublk_lua_open_control(lua_State *L)
{
	luaL_newmetatable(L, UBLK_CONTROL_MT);
	luaL_setfuncs(L, control_meta, 0);
	luaL_newlib(L, control_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_open_control);
	lua_setfield(L, -2, "open_control");
}
