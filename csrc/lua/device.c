/*
 * ublk.device (device.h). A device handle is created closed, before ADD_DEV, as liolib creates a
 * file before opening it, so nothing acquired can be lost to an allocation error. Once adopted it
 * owns the kernel device: close, __close and __gc delete it, once. The Lua half of the type is
 * lua/ublk/device.lua, whose class this file's __index looks in first, then the device's own table.
 */
#include "device.h"

#include <errno.h>
#include <lauxlib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "bridge.h"
#include "control.h"
#include "rings.h"
#include "module.h"
#include "util.h"

/* Free the data plane. Nothing may wait on Lua meanwhile: the caller abandoned what Lua holds, and
 * from then on requests for Lua are answered EIO without it. */
static void free_data_plane(struct device_handle *d)
{
	ublk_server_free(d->srv);
	d->srv = NULL;
	ublk_bridge_detach(d->bridge);
}

/* While STOP_DEV waits: Lua-owned rings are still served without Lua, since no queue thread is
 * there to do it (requests for Lua are answered EIO, the others go to the C target as always). */
static void pump(void *srv)
{
	ublk_rings_pump(srv);
}

/* The collector's path: STOP_DEV first (in-flight requests are still served while the disk goes
 * away), with no Lua to wait on, then the data plane goes. */
static void stop_server(struct device_handle *d)
{
	if (!d->srv)
		return;
	ublk_bridge_abandon(d->bridge);
	if (d->srv->running && d->ctrl && d->dev_id >= 0)
		ublk_ctrl_device_command(d->ctrl, UBLK_CMD_STOP_DEV, _IOC_READ | _IOC_WRITE, (__u32)d->dev_id,
					 d->srv->queue_threads ? NULL : pump, d->srv);
	free_data_plane(d);
}

static struct device_handle *check_device(lua_State *L)
{
	return luaL_checkudata(L, 1, UBLK_DEVICE_MT);
}

static struct device_handle *check_owned(lua_State *L)
{
	struct device_handle *d = check_device(L);

	if (d->dev_id < 0)
		luaL_error(L, "attempt to use a deleted ublk device");
	return d;
}

/** new(control) -> a device handle that owns nothing yet; its uservalue is a table for Lua. */
static int l_new(lua_State *L)
{
	struct ublk_ctrl *c = ublk_lua_check_control(L, 1);
	struct device_handle *d = lua_newuserdatauv(L, sizeof(*d), 1);

	memset(d, 0, sizeof(*d));
	d->dev_id = -1;
	luaL_setmetatable(L, UBLK_DEVICE_MT);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 1);
	d->ctrl = c;
	c->refs++;
	return 1;
}

/** adopt(dev, id): the handle now owns kernel device `id`. */
static int l_adopt(lua_State *L)
{
	struct device_handle *d = check_device(L);
	lua_Integer id = luaL_checkinteger(L, 2);

	luaL_argcheck(L, id >= 0 && id <= 0xfffffffeLL, 2, "device id out of range");
	luaL_argcheck(L, d->dev_id < 0, 1, "the handle already owns a device");
	d->dev_id = id;
	return 0;
}

/** forget(dev): the kernel device is gone (deleted through the traced path). */
static int l_forget(lua_State *L)
{
	check_device(L)->dev_id = -1;
	return 0;
}

/** owned(dev) -> id or nil */
static int l_owned(lua_State *L)
{
	struct device_handle *d = check_device(L);

	if (d->dev_id < 0)
		lua_pushnil(L);
	else
		lua_pushinteger(L, d->dev_id);
	return 1;
}

/** data(dev) -> the device's own table (its uservalue) */
static int l_data(lua_State *L)
{
	check_device(L);
	lua_getiuservalue(L, 1, 1);
	return 1;
}

static lua_Integer opt_field(lua_State *L, int t, const char *k, lua_Integer def)
{
	lua_Integer v;

	lua_getfield(L, t, k);
	v = lua_isnil(L, -1) ? def : lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

/** serve(dev, cfg) -> true | nil, msg, errno: the server (char device, target, queues) and, with hooks, the
 * bridge. cfg: target, path, size, offset, block_size, direct, read_only, queues, depth, max_io,
 * open_timeout_ms, hooks (a mask of ops), hooks_pass, queue_threads (strings stay anchored in cfg). */
static int l_serve(lua_State *L)
{
	struct device_handle *d = check_owned(L);
	struct ublk_server_config cfg;
	const char *why = "";
	char what[160];
	int ret, hooks_pass;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (d->srv)
		return luaL_error(L, "the device is already being served");
	memset(&cfg, 0, sizeof(cfg));
	cfg.dev_id = (int)d->dev_id;
	cfg.nr_queues = (int)opt_field(L, 2, "queues", 1);
	cfg.depth = (int)opt_field(L, 2, "depth", 128);
	cfg.buf_size = (unsigned)opt_field(L, 2, "max_io", 512 * 1024);
	cfg.legacy = d->ctrl->legacy;
	cfg.open_timeout_ms = (int)opt_field(L, 2, "open_timeout_ms", 5000);
	lua_getfield(L, 2, "target");
	cfg.tgt.name = lua_tostring(L, -1);
	lua_getfield(L, 2, "path");
	cfg.tgt.path = lua_tostring(L, -1);
	lua_pop(L, 2); /* both strings live on in cfg, which the caller holds */
	cfg.tgt.size = (uint64_t)opt_field(L, 2, "size", 0);
	cfg.tgt.offset = (uint64_t)opt_field(L, 2, "offset", 0);
	cfg.tgt.block_size = (unsigned)opt_field(L, 2, "block_size", 512);
	lua_getfield(L, 2, "direct");
	cfg.tgt.direct = lua_toboolean(L, -1);
	lua_getfield(L, 2, "read_only");
	cfg.tgt.read_only = lua_toboolean(L, -1);
	lua_pop(L, 2);
	cfg.hook_mask = (unsigned)opt_field(L, 2, "hooks", 0);
	lua_getfield(L, 2, "queue_threads");
	cfg.queue_threads = lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 2, "hooks_pass");
	hooks_pass = lua_toboolean(L, -1);
	lua_pop(L, 1);
	cfg.tgt.nr_queues = cfg.nr_queues;
	cfg.tgt.depth = cfg.depth;
	luaL_argcheck(L, cfg.nr_queues >= 1 && cfg.nr_queues <= (int)UBLK_MAX_NR_QUEUES, 2, "queues out of range");
	luaL_argcheck(L, cfg.depth >= 1 && cfg.depth <= UBLK_MAX_QUEUE_DEPTH, 2, "depth out of range");
	luaL_argcheck(L, cfg.buf_size >= 4096 && cfg.buf_size <= (1U << UBLK_IO_BUF_BITS), 2, "max_io out of range");
	/* Lua-owned rings are reaped by the Lua side, which only hooks or a handler bring */
	luaL_argcheck(L, cfg.queue_threads || cfg.hook_mask, 2, "Lua-owned rings need hooks (a handler or hooks)");

	ret = ublk_server_new(&d->srv, &cfg, &why);
	if (ret < 0) {
		d->srv = NULL;
		snprintf(what, sizeof(what), "%s", why);
		return ublk_lua_fail(L, what, -ret);
	}
	if (cfg.hook_mask) {
		if (d->bridge) /* a stopped device is never served again with Lua: dev:start() says so */
			ret = -EBUSY;
		else
			ret = ublk_bridge_new(&d->bridge, d->srv, hooks_pass);
		if (ret < 0) {
			ublk_server_free(d->srv);
			d->srv = NULL;
			return ublk_lua_fail(L, "setting up the Lua side of the device", -ret);
		}
	}
	lua_pushboolean(L, 1);
	return 1;
}

/** start_queues(dev [, affinity]) -> true | nil, msg, errno: the queues fetch (their threads, or this
 * thread for Lua-owned rings). affinity[q + 1] is a list of CPUs for queue thread q. */
static int l_start_queues(lua_State *L)
{
	struct device_handle *d = check_owned(L);
	struct ublk_server *s = d->srv;
	cpu_set_t *cpus;
	int *has, q, ret;
	const char *why = "";

	if (!s)
		return luaL_error(L, "the device has no server (serve it first)");
	if (s->running)
		return luaL_error(L, "the device's queues are already running");
	cpus = calloc((size_t)s->nr_queues, sizeof(*cpus));
	has = calloc((size_t)s->nr_queues, sizeof(*has));
	if (!cpus || !has) {
		free(cpus);
		free(has);
		return ublk_lua_fail(L, "allocating CPU sets", ENOMEM);
	}
	if (lua_istable(L, 2)) {
		for (q = 0; q < s->nr_queues; q++) {
			lua_Integer i, n;

			/* raw: nothing here may raise while cpus and has are held */
			if (lua_rawgeti(L, 2, q + 1) == LUA_TTABLE) {
				n = (lua_Integer)lua_rawlen(L, -1);
				CPU_ZERO(&cpus[q]);
				for (i = 1; i <= n; i++) {
					lua_rawgeti(L, -1, i);
					lua_Integer cpu = lua_tointeger(L, -1);
					if (cpu >= 0 && cpu < CPU_SETSIZE) {
						CPU_SET((int)cpu, &cpus[q]);
						has[q] = 1;
					}
					lua_pop(L, 1);
				}
			}
			lua_pop(L, 1);
		}
	}
	ret = ublk_server_start(s, cpus, has, &why);
	free(cpus);
	free(has);
	if (ret < 0)
		return ublk_lua_fail(L, why, -ret);
	ret = ublk_bridge_watch_rings(d->bridge);
	if (ret < 0)
		return ublk_lua_fail(L, "epoll_ctl (watching the queue rings)", -ret);
	d->was_served = 1;
	lua_pushboolean(L, 1);
	return 1;
}

/** stop_queues(dev): abandon what Lua holds, stop the queues and free the data plane (STOP_DEV is
 * the caller's). */
static int l_stop_queues(lua_State *L)
{
	struct device_handle *d = check_device(L);

	if (d->srv) {
		ublk_bridge_abandon(d->bridge);
		free_data_plane(d);
	}
	return 0;
}

/** serving(dev) -> number of queues still served (0 when none or not served). */
static int l_serving(lua_State *L)
{
	struct device_handle *d = check_device(L);

	lua_pushinteger(L, d->srv ? ublk_server_alive(d->srv) : 0);
	return 1;
}

/**
 * wait(dev, timeout_seconds [, signal_fd]) -> "ended" | "signal", signo | "timeout"
 * Sleeps until a queue ends (the kernel stopped the device, or a queue failed), a signal
 * arrives on signal_fd (a signalfd), or the timeout passes (negative: no timeout). A device with
 * Lua handlers waits in its bridge's epoll instead, and asks here what woke it.
 */
static int l_wait(lua_State *L)
{
	struct device_handle *d = check_device(L);
	double timeout = luaL_optnumber(L, 2, -1);
	int sfd = (int)luaL_optinteger(L, 3, -1);
	struct pollfd pfd[2];
	int n = 0, ret;

	if (!d->srv || ublk_server_alive(d->srv) < d->srv->nr_queues) {
		lua_pushliteral(L, "ended");
		return 1;
	}
	pfd[n].fd = d->srv->tally.notify;
	pfd[n++].events = POLLIN;
	if (sfd >= 0) {
		pfd[n].fd = sfd;
		pfd[n++].events = POLLIN;
	}
	ret = poll(pfd, (nfds_t)n, ublk_timeout_ms(timeout));
	if (ret < 0 && errno != EINTR)
		return ublk_lua_fail(L, "poll", errno);
	if (sfd >= 0 && (pfd[1].revents & POLLIN)) {
		struct signalfd_siginfo si;

		if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			lua_pushliteral(L, "signal");
			lua_pushinteger(L, si.ssi_signo);
			return 2;
		}
	}
	if (ublk_server_alive(d->srv) < d->srv->nr_queues) {
		lua_pushliteral(L, "ended");
		return 1;
	}
	lua_pushliteral(L, "timeout");
	return 1;
}

/** stats(dev) -> { queues = { {requests, wakeups, submits, errors, cmd_error}, ... }, memory } | nil */
static int l_stats(lua_State *L)
{
	struct device_handle *d = check_device(L);
	int q;

	if (!d->srv) {
		lua_pushnil(L);
		return 1;
	}
	lua_createtable(L, 0, 3);
	lua_createtable(L, d->srv->nr_queues, 0);
	for (q = 0; q < d->srv->nr_queues; q++) {
		/* read without the queue's cooperation: counters may be a wake-up behind */
		const struct ublk_queue_stats *st = &d->srv->queues[q]->stats;

		lua_createtable(L, 0, 5);
		ublk_lua_set_int(L, "requests", (lua_Integer)QUEUE_STAT_READ(st, requests));
		ublk_lua_set_int(L, "wakeups", (lua_Integer)QUEUE_STAT_READ(st, wakeups));
		ublk_lua_set_int(L, "submits", (lua_Integer)QUEUE_STAT_READ(st, submits));
		ublk_lua_set_int(L, "errors", (lua_Integer)QUEUE_STAT_READ(st, errors));
		ublk_lua_set_int(L, "cmd_error", QUEUE_STAT_READ(st, cmd_error));
		lua_seti(L, -2, q + 1);
	}
	lua_setfield(L, -2, "queues");
	ublk_lua_set_int(L, "memory", d->srv->tgt.ops && d->srv->tgt.ops->memory
					      ? (lua_Integer)d->srv->tgt.ops->memory(&d->srv->tgt) : 0);
	return 1;
}

/** ended_fd(dev) -> an eventfd that polls readable once a queue ended, or nil when not served */
static int l_ended_fd(lua_State *L)
{
	struct device_handle *d = check_device(L);

	if (!d->srv)
		return 0;
	lua_pushinteger(L, d->srv->tally.notify);
	return 1;
}

/* The collector's path: delete the kernel device if still owned, then drop the ring. Never raises. */
static int l_gc(lua_State *L)
{
	struct device_handle *d = check_device(L);
	int served = d->srv != NULL || d->was_served;

	/* DEL_DEV waits for /dev/ublkcN to be closed: the queues go first */
	stop_server(d);
	if (d->ctrl && d->dev_id >= 0) {
		ublk_ctrl_delete_device(d->ctrl, (__u32)d->dev_id, served);
		d->dev_id = -1;
	}
	if (d->ctrl) {
		ublk_ctrl_unref(d->ctrl);
		d->ctrl = NULL;
	}
	ublk_bridge_free(d->bridge);
	d->bridge = NULL;
	return 0;
}

/* __close: dev:close() (lua/ublk/device.lua), which stops and deletes the device serving its Lua side. */
static int l_close(lua_State *L)
{
	lua_settop(L, 1);
	lua_getfield(L, 1, "close");
	lua_insert(L, 1);
	lua_call(L, 1, 0);
	return 0;
}

static int l_tostring(lua_State *L)
{
	struct device_handle *d = check_device(L);

	if (d->dev_id >= 0)
		lua_pushfstring(L, "ublk.device %I (/dev/ublkc%I)", (lua_Integer)d->dev_id, (lua_Integer)d->dev_id);
	else
		lua_pushliteral(L, "ublk.device (deleted)");
	return 1;
}

/* __index: the class's methods (upvalue 1), then the device's own table (dev.id, dev.path, ...). */
static int l_index(lua_State *L)
{
	lua_settop(L, 2);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	lua_getiuservalue(L, 1, 1);
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static const luaL_Reg device_meta[] = {
	{ "__gc", l_gc },
	{ "__close", l_close },
	{ "__tostring", l_tostring },
	{ NULL, NULL },
};

static const luaL_Reg device_funcs[] = {
	{ "new", l_new },
	{ "adopt", l_adopt },
	{ "forget", l_forget },
	{ "owned", l_owned },
	{ "data", l_data },
	{ "serve", l_serve },
	{ "start_queues", l_start_queues },
	{ "stop_queues", l_stop_queues },
	{ "serving", l_serving },
	{ "wait", l_wait },
	{ "ended_fd", l_ended_fd },
	{ "stats", l_stats },
	{ NULL, NULL },
};

void ublk_lua_open_device(lua_State *L)
{
	/* set every time the module is opened (busted reloads it per spec file): the newest class wins */
	luaL_newmetatable(L, UBLK_DEVICE_MT);
	luaL_setfuncs(L, device_meta, 0);
	lua_pushliteral(L, UBLK_DEVICE_MT); /* getmetatable(dev): __gc and the class stay out of reach */
	lua_setfield(L, -2, "__metatable");
	lua_newtable(L); /* the class: lua/ublk/device.lua fills it */
	lua_pushvalue(L, -1);
	lua_setfield(L, -4, "class");
	lua_pushcclosure(L, l_index, 1);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	luaL_setfuncs(L, device_funcs, 0);
}
