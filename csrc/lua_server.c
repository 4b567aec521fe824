/*
 * The device's data plane, as methods of ublk.device (lua/ublk.lua wraps them): _serve builds the
 * server (char device, target, queues), _start_queues starts the queue threads (or, for a device
 * with handlers or hooks, sets up the rings the Lua thread serves itself), _wait sleeps until a queue ends or
 * a signal comes, _stop_queues joins and frees. Also core.probe_backing, which the file
 * target's option checks use before anything reaches the kernel.
 */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <linux/fs.h>
#include <lua.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ctrl.h"
#include "lua_ublk.h"
#include "server.h"

/* Join the queue threads (or end the Lua thread's rings) and free the data plane. Nothing may wait
 * on Lua meanwhile: the caller has answered EIO for what Lua holds (ublk_bridge_abandon), and from
 * then on hooked requests are answered EIO without Lua. */
static void free_data_plane(struct device_handle *d)
{
	ublk_server_free(d->srv);
	d->srv = NULL;
	ublk_bridge_detach(d->bridge);
}

/* While STOP_DEV waits: an inline queue's ring is still served without Lua, since no queue thread is
 * there to do it: requests for Lua are answered EIO (the bridge was abandoned), the others go to the
 * C target as always. */
static void answer_inline(void *arg)
{
	ublk_bridge_pump(arg);
}

void ublk_device_stop_server(struct device_handle *d)
{
	if (!d->srv)
		return;
	/* No Lua can run here (the collector's path), so STOP_DEV must not wait on it */
	ublk_bridge_abandon(d->bridge);
	/* STOP_DEV first: in-flight requests are still served while the disk goes away */
	if (d->srv->running && d->ctrl && d->dev_id >= 0)
		ublk_ctrl_device_command(d->ctrl, UBLK_CMD_STOP_DEV, _IOC_READ | _IOC_WRITE, (__u32)d->dev_id,
					 d->srv->inline_lua ? answer_inline : NULL, d->bridge);
	free_data_plane(d);
}

static struct device_handle *check_owned(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	if (d->dev_id < 0)
		luaL_error(L, "attempt to use a deleted ublk device");
	return d;
}

static lua_Integer opt_field(lua_State *L, int t, const char *k, lua_Integer def)
{
	lua_Integer v;

	lua_getfield(L, t, k);
	v = lua_isnil(L, -1) ? def : lua_tointeger(L, -1);
	lua_pop(L, 1);
	return v;
}

/** device:_serve(cfg) -> true | nil, msg, errno. cfg: target, path, size, offset, block_size, direct,
 * read_only, queues, depth, max_io, legacy, open_timeout_ms (strings stay anchored in cfg). */
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
	lua_getfield(L, 2, "inline");
	cfg.inline_lua = lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 2, "hooks_pass");
	hooks_pass = lua_toboolean(L, -1);
	lua_pop(L, 1);
	cfg.tgt.nr_queues = cfg.nr_queues;
	cfg.tgt.depth = cfg.depth;
	luaL_argcheck(L, cfg.nr_queues >= 1 && cfg.nr_queues <= (int)UBLK_MAX_NR_QUEUES, 2, "queues out of range");
	luaL_argcheck(L, cfg.depth >= 1 && cfg.depth <= UBLK_MAX_QUEUE_DEPTH, 2, "depth out of range");
	luaL_argcheck(L, cfg.buf_size >= 4096 && cfg.buf_size <= (1U << UBLK_IO_BUF_BITS), 2, "max_io out of range");
	/* rings the Lua thread serves are reaped by the Lua side, which only hooks or a handler bring */
	luaL_argcheck(L, !cfg.inline_lua || cfg.hook_mask, 2, "inline needs hooks (a handler or hooks)");

	ret = ublk_server_new(&d->srv, &cfg, &why);
	if (ret < 0) {
		d->srv = NULL;
		snprintf(what, sizeof(what), "%s", why);
		return ublk_lua_fail(L, what, -ret);
	}
	if (cfg.hook_mask) {
		ret = ublk_bridge_attach(d, hooks_pass);
		if (ret < 0) {
			ublk_server_free(d->srv);
			d->srv = NULL;
			return ublk_lua_fail(L, "setting up the Lua side of the device", -ret);
		}
	}
	lua_pushboolean(L, 1);
	return 1;
}

/** device:_start_queues([affinity]) -> true | nil, msg, errno. affinity[q + 1] is a list of CPUs. */
static int l_start_queues(lua_State *L)
{
	struct device_handle *d = check_owned(L);
	struct ublk_server *s = d->srv;
	cpu_set_t *cpus;
	int *has, q, ret;
	const char *why = "";

	if (!s)
		return luaL_error(L, "the device has no server (call _serve first)");
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

/** device:_stop_queues(): join the queue threads and free the data plane (STOP_DEV is the caller's). */
static int l_stop_queues(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	if (d->srv) {
		ublk_bridge_abandon(d->bridge);
		free_data_plane(d);
	}
	return 0;
}

/** device:_serving() -> number of queues still served (0 when none or not served). */
static int l_serving(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	lua_pushinteger(L, d->srv ? ublk_server_alive(d->srv) : 0);
	return 1;
}

/**
 * device:_wait(timeout_seconds [, signal_fd]) -> "ended" | "signal", signo | "timeout"
 * Sleeps until a queue ends (the kernel stopped the device, or a queue failed), a signal
 * arrives on signal_fd (a signalfd), or the timeout passes (negative: no timeout). A device with
 * Lua handlers waits in its bridge's epoll instead, and asks here what woke it.
 */
static int l_wait(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);
	double timeout = luaL_optnumber(L, 2, -1);
	int sfd = (int)luaL_optinteger(L, 3, -1);
	struct pollfd pfd[2];
	int n = 0, ret;

	if (!d->srv || ublk_server_alive(d->srv) < d->srv->nr_queues) {
		lua_pushliteral(L, "ended");
		return 1;
	}
	pfd[n].fd = d->srv->notify;
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

/** device:_ended_fd() -> an eventfd that polls readable once a queue ended, or nil when not served */
static int l_ended_fd(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	if (!d->srv)
		return 0;
	lua_pushinteger(L, d->srv->notify);
	return 1;
}

/** device:_stats() -> { queues = { {requests, wakeups, submits, errors, cmd_error}, ... }, memory } */
static int l_stats(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);
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

static long long sysfs_number(unsigned maj, unsigned min, const char *attr)
{
	char path[96];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s", maj, min, attr);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/**
 * core.probe_backing(path) -> { kind = "file"|"block", size, logical_block_size, physical_block_size,
 * discard, direct, writable } | nil, msg, errno
 * What the file target needs to know before ADD_DEV: the size, the block sizes O_DIRECT needs,
 * whether the backing store discards, whether it takes O_DIRECT at all, and whether we may write.
 */
static int l_probe_backing(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct stat st;
	int fd, dfd, is_blk;
	unsigned long long size = 0;
	int lbs = 512, pbs = 4096;
	long long discard = 1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ublk_lua_fail(L, path, errno);
	if (fstat(fd, &st) < 0) {
		int err = errno;

		close(fd);
		return ublk_lua_fail(L, path, err);
	}
	is_blk = S_ISBLK(st.st_mode);
	if (!is_blk && !S_ISREG(st.st_mode)) {
		close(fd);
		lua_pushnil(L);
		lua_pushfstring(L, "%s: not a regular file or a block device", path);
		lua_pushinteger(L, EINVAL);
		return 3;
	}
	if (is_blk) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &lbs) < 0 ||
		    ioctl(fd, BLKPBSZGET, &pbs) < 0) {
			int err = errno;

			close(fd);
			return ublk_lua_fail(L, path, err);
		}
		discard = sysfs_number(major(st.st_rdev), minor(st.st_rdev), "discard_max_bytes");
	} else {
		size = (unsigned long long)st.st_size;
		pbs = (int)st.st_blksize;
	}
	close(fd);
	dfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (dfd >= 0)
		close(dfd);

	lua_createtable(L, 0, 7);
	lua_pushstring(L, is_blk ? "block" : "file");
	lua_setfield(L, -2, "kind");
	ublk_lua_set_int(L, "size", (lua_Integer)size);
	ublk_lua_set_int(L, "logical_block_size", lbs);
	ublk_lua_set_int(L, "physical_block_size", pbs);
	lua_pushboolean(L, discard > 0);
	lua_setfield(L, -2, "discard");
	lua_pushboolean(L, dfd >= 0);
	lua_setfield(L, -2, "direct");
	lua_pushboolean(L, access(path, W_OK) == 0);
	lua_setfield(L, -2, "writable");
	return 1;
}

/** core.create_file(path, size) -> true | nil, msg, errno: a new sparse file (never an existing one). */
static int l_create_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_Integer size = luaL_checkinteger(L, 2);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		return ublk_lua_fail(L, path, errno);
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;

		close(fd);
		unlink(path);
		return ublk_lua_fail(L, path, err);
	}
	close(fd);
	lua_pushboolean(L, 1);
	return 1;
}

static const luaL_Reg server_methods[] = {
	{ "_serve", l_serve },
	{ "_start_queues", l_start_queues },
	{ "_stop_queues", l_stop_queues },
	{ "_serving", l_serving },
	{ "_wait", l_wait },
	{ "_ended_fd", l_ended_fd },
	{ "_stats", l_stats },
	{ NULL, NULL },
};

void ublk_lua_open_server(lua_State *L)
{
	/* into core.device_mt.methods, beside the control-plane ones */
	lua_getfield(L, -1, "device_mt");
	lua_getfield(L, -1, "methods");
	luaL_setfuncs(L, server_methods, 0);
	lua_pop(L, 2);
	lua_pushcfunction(L, l_probe_backing);
	lua_setfield(L, -2, "probe_backing");
	lua_pushcfunction(L, l_create_file);
	lua_setfield(L, -2, "create_file");
}
