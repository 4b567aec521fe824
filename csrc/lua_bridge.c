/*
 * The bridge of a device with Lua handlers or hooks (bridge.h): its life next to the server, the
 * pollable descriptor of its Lua work with the handlers' timer and watched descriptors, and the
 * device methods lua/ublk/handler.lua drives a dispatch with (_poll, _run, _flush).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "lua_ublk.h"

/* epoll data: what woke us */
#define EV_HANDOFF (1ULL << 32)
#define EV_TIMER (2ULL << 32)
#define EV_FD (3ULL << 32)

static void flush_queue(struct ublk_bridge *b, int q)
{
	if (!b->nr_done[q])
		return;
	if (b->srv)
		ublk_queue_complete_remote_batch(b->srv->queues[q], b->done + (size_t)q * (size_t)b->depth, b->nr_done[q]);
	b->nr_done[q] = 0;
}

void ublk_bridge_answer(struct ublk_bridge *b, int q_id, int tag, int result, int pass)
{
	struct bridge_slot *s = bridge_slot(b, q_id, tag);
	struct ublk_remote_done *d = &b->done[(size_t)q_id * (size_t)b->depth + (size_t)b->nr_done[q_id]++];

	s->held = 0;
	s->gen++;
	d->tag = (uint16_t)tag;
	d->pass = (uint16_t)pass;
	d->result = result;
	if (pass)
		b->passed++;
	else if (result < 0)
		b->errors++;
	if (!b->batching)
		flush_queue(b, q_id);
}

static void flush_all(struct ublk_bridge *b)
{
	int q;

	for (q = 0; q < b->nr_queues; q++)
		flush_queue(b, q);
}

int ublk_bridge_abandon(struct ublk_bridge *b)
{
	size_t n, i;
	int q, tag, count = 0;

	if (!b || !b->srv)
		return 0;
	b->batching++;
	n = ublk_handoff_close(&b->srv->handoff, b->closing);
	epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->srv->handoff.efd, NULL); /* nothing more comes (ENOENT the second time) */
	for (i = 0; i < n; i++) {
		/* listed, never taken: hold it just to answer it */
		bridge_slot(b, b->closing[i].q_id, b->closing[i].tag)->held = 1;
		ublk_bridge_answer(b, b->closing[i].q_id, b->closing[i].tag, -EIO, 0);
		count++;
	}
	/* and everything taken, whether its handler ran or not (a _run below us skips these) */
	for (q = 0; q < b->nr_queues; q++)
		for (tag = 0; tag < b->depth; tag++)
			if (bridge_slot(b, q, tag)->held) {
				ublk_bridge_answer(b, q, tag, -EIO, 0);
				count++;
			}
	b->batching--;
	flush_all(b);
	return count;
}

void ublk_bridge_detach(struct ublk_bridge *b)
{
	int i;

	if (!b)
		return;
	b->srv = NULL; /* freed, or about to be: its queue threads are joined */
	for (i = 0; i < b->nr_queues * b->depth; i++)
		b->slots[i].gen++; /* every request and buffer still referenced is now stale */
}

void ublk_bridge_free(struct ublk_bridge *b)
{
	if (!b)
		return;
	ublk_bridge_detach(b);
	if (b->epfd >= 0)
		close(b->epfd);
	if (b->timerfd >= 0)
		close(b->timerfd);
	free(b->slots);
	free(b->taken);
	free(b->closing);
	free(b->done);
	free(b->nr_done);
	free(b);
}

int ublk_bridge_attach(struct device_handle *d, int hooks_pass)
{
	struct ublk_server *s = d->srv;
	struct ublk_bridge *b;
	struct epoll_event ev;
	size_t n = (size_t)s->nr_queues * (size_t)s->depth;
	int ret;

	if (d->bridge)
		return -EBUSY; /* a stopped device is never served again */
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->epfd = b->timerfd = -1;
	b->nr_queues = s->nr_queues;
	b->depth = s->depth;
	b->hooks_pass = hooks_pass;
	b->slots = calloc(n, sizeof(b->slots[0]));
	b->taken = calloc(n, sizeof(b->taken[0]));
	b->closing = calloc(n, sizeof(b->closing[0]));
	b->done = calloc(n, sizeof(b->done[0]));
	b->nr_done = calloc((size_t)s->nr_queues, sizeof(b->nr_done[0]));
	if (!b->slots || !b->taken || !b->closing || !b->done || !b->nr_done) {
		ret = -ENOMEM;
		goto fail;
	}
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	b->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (b->epfd < 0 || b->timerfd < 0) {
		ret = -errno;
		goto fail;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.u64 = EV_TIMER;
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, b->timerfd, &ev) < 0) {
		ret = -errno;
		goto fail;
	}
	ev.events = EPOLLIN | EPOLLET; /* each knock is an edge: the counter is never read (handoff.h) */
	ev.data.u64 = EV_HANDOFF;
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, s->handoff.efd, &ev) < 0) {
		ret = -errno;
		goto fail;
	}
	b->srv = s;
	d->bridge = b;
	return 0;

fail:
	ublk_bridge_free(b);
	return ret;
}

static struct ublk_bridge *check_bridge(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	if (!d->bridge)
		luaL_error(L, "this device has no Lua handler or hooks, or was never started");
	return d->bridge;
}

/* ---- the device's bridge methods ---- */

/* Call the function and nargs arguments on top; what it raises is dropped (the dispatch must go
 * on: a request left half-handled here would never be answered). 0, or -1 when it raised. */
static int call_dropping_errors(lua_State *L, int nargs)
{
	if (lua_pcall(L, nargs, 0, 0) == LUA_OK)
		return 0;
	lua_pop(L, 1);
	return -1;
}

/* Answer a request whose handler returned the nres values on top of co's stack; what is wrong
 * with values that mean nothing goes to on_error(req, message, false). */
static void finish_returned(lua_State *L, lua_State *co, struct request_handle *v, int nres, int req, int on_error)
{
	struct ublk_bridge *b = request_bridge(v);
	int result, pass;

	if (!bridge_live(b, v->q_id, v->tag, v->gen) || v->deferred)
		return; /* answered by req:done meanwhile, or to be */
	if (ublk_request_result(co, v, lua_gettop(co) - nres + 1, nres, &result, &pass) == 0) {
		ublk_bridge_answer(b, v->q_id, v->tag, result, pass);
		return;
	}
	ublk_bridge_answer(b, v->q_id, v->tag, -EIO, 0);
	lua_pushvalue(L, on_error);
	lua_pushvalue(L, req);
	lua_xmove(co, L, 1);
	lua_pushboolean(L, 0);
	call_dropping_errors(L, 3);
}

/* A handler raised (its error object on top of co): EIO, and on_error(req, traceback, true). */
static void finish_raised(lua_State *L, lua_State *co, struct request_handle *v, int req, int on_error)
{
	struct ublk_bridge *b = request_bridge(v);
	const char *msg;

	if (bridge_live(b, v->q_id, v->tag, v->gen))
		ublk_bridge_answer(b, v->q_id, v->tag, -EIO, 0);
	lua_xmove(co, L, 1); /* the error object, converted here: no metamethod runs on a dead coroutine */
	if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
		msg = lua_tostring(L, -1);
	else
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
	lua_pushvalue(L, on_error);
	lua_pushvalue(L, req);
	luaL_traceback(L, co, msg, 0); /* the dead coroutine's stack still tells where */
	lua_pushboolean(L, 1);
	call_dropping_errors(L, 3);
}

/**
 * dev:_run(handlers, pool, workers, on_yield, on_error) -> n
 * Takes the requests the queue threads handed over and runs each one's handler (handlers[op], by
 * op number) in a coroutine: one from pool (a list) or a new one, which goes into the weak set
 * workers. A handler that returns is answered here and its coroutine goes back to the pool; one
 * that yields is given to on_yield(co, req, yielded...) (at most 4 values); one that raises is
 * answered EIO and its traceback given to on_error(req, traceback, true); values that mean nothing
 * are answered EIO and what is wrong with them given to on_error(req, message, false). An op the
 * table lacks is answered EOPNOTSUPP. Answers go back to the queues every 8 requests. Returns how
 * many handlers it started.
 *
 * Re-entrant and safe against errors: every request is marked held when taken and the batch's
 * position moves before its handler runs, so a handler that dispatches again, a stop in the middle
 * (which answers whatever is held) or an error escaping from here runs no request twice and
 * forgets none (the next _run goes on where this one stopped).
 */
static int l_run(lua_State *L)
{
	enum { DEV = 1, HANDLERS, POOL, WORKERS, ON_YIELD, ON_ERROR, MTS, TOP = MTS + 1 };
	struct ublk_bridge *b = check_bridge(L);
	lua_Integer started = 0;

	luaL_checktype(L, HANDLERS, LUA_TTABLE);
	luaL_checktype(L, POOL, LUA_TTABLE);
	luaL_checktype(L, WORKERS, LUA_TTABLE);
	luaL_checktype(L, ON_YIELD, LUA_TFUNCTION);
	luaL_checktype(L, ON_ERROR, LUA_TFUNCTION);
	lua_settop(L, ON_ERROR);
	luaL_checkstack(L, 24, NULL);
	if (!b->srv) {
		lua_pushinteger(L, 0);
		return 1;
	}
	ublk_request_metatables(L); /* MTS, MTS + 1 */
	if (b->pos == b->n) {
		size_t i;

		b->n = ublk_handoff_take(&b->srv->handoff, b->taken);
		b->edge_unanswered = 0;
		b->pos = 0;
		b->requests += b->n;
		b->batches += b->n > 0;
		for (i = 0; i < b->n; i++) /* from here on, a stop answers them */
			bridge_slot(b, b->taken[i].q_id, b->taken[i].tag)->held = 1;
	}
	while (b->srv && b->pos < b->n) {
		const struct ublk_handoff_req h = b->taken[b->pos++];
		struct request_handle *v;
		lua_State *co;
		int req, coi, status, nres = 0;
		lua_Integer pooled;

		if (!bridge_slot(b, h.q_id, h.tag)->held)
			continue; /* a stop answered it meanwhile */
		v = ublk_request_push(L, DEV, MTS, &h);
		req = lua_gettop(L);
		if (lua_rawgeti(L, HANDLERS, ublksrv_get_op(&h.iod)) != LUA_TFUNCTION) {
			ublk_bridge_answer(b, h.q_id, h.tag, -EOPNOTSUPP, 0);
			lua_settop(L, TOP);
			continue;
		}
		pooled = (lua_Integer)lua_rawlen(L, POOL);
		if (pooled > 0) {
			lua_rawgeti(L, POOL, pooled);
			lua_pushnil(L);
			lua_rawseti(L, POOL, pooled);
			co = lua_tothread(L, -1);
		} else {
			co = lua_newthread(L);
			lua_pushvalue(L, -1);
			lua_pushboolean(L, 1);
			lua_rawset(L, WORKERS);
		}
		coi = lua_gettop(L);
		lua_pushvalue(L, req + 1); /* the handler */
		lua_pushvalue(L, req);
		lua_xmove(L, co, 2);
		started++;
		status = lua_resume(co, L, 1, &nres);
		if (status == LUA_OK) {
			finish_returned(L, co, v, nres, req, ON_ERROR);
			lua_settop(co, 0);
			lua_pushvalue(L, coi);
			lua_rawseti(L, POOL, (lua_Integer)lua_rawlen(L, POOL) + 1);
		} else if (status == LUA_YIELD) {
			if (nres > 4) { /* the scheduler's protocol yields at most 4 values */
				lua_pop(co, nres - 4);
				nres = 4;
			}
			lua_pushvalue(L, ON_YIELD);
			lua_pushvalue(L, coi);
			lua_pushvalue(L, req);
			lua_xmove(co, L, nres);
			if (call_dropping_errors(L, 2 + nres) < 0 && bridge_live(b, h.q_id, h.tag, v->gen))
				ublk_bridge_answer(b, h.q_id, h.tag, -EIO, 0); /* nobody will resume it */
		} else {
			finish_raised(L, co, v, req, ON_ERROR);
		}
		lua_settop(L, TOP);
		if (started % 8 == 0)
			flush_all(b); /* the queue threads work on these while we run the rest */
	}
	lua_pushinteger(L, started);
	return 1;
}

/** dev:_flush(): the end of a dispatch (its to-be-closed variable calls this even when the
 * dispatch raised). Sends the answers collected so far, one batch per queue; and when work is left
 * that no knock will announce, knocks itself, so that dev:fd() polls readable again. */
static int l_flush(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);

	if (b->batching > 0)
		b->batching--;
	flush_all(b);
	if (b->srv && ((b->edge_unanswered && ublk_handoff_pending(&b->srv->handoff)) || b->pos < b->n)) {
		/* a nested dispatch took the knock's edge but not the list, or an error left part of
		 * a batch: no queue thread will knock while the list is not empty */
		b->edge_unanswered = 0;
		ublk_handoff_knock(&b->srv->handoff);
	}
	return 0;
}

/**
 * dev:_poll(timeout_seconds, fds) -> requests_ready, timer_fired, nfds
 * Waits up to timeout (0: not at all; negative: for ever) for the device's descriptor; fds[2i-1], fds[2i] get each
 * watched descriptor that is ready and its epoll events. Starts a dispatch (answers are batched
 * until _flush).
 */
static int l_poll(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);
	double timeout = luaL_optnumber(L, 2, 0);
	struct epoll_event ev[64];
	int n, i, reqs = 0, timer = 0, nfd = 0;

	b->batching++; /* first: the dispatch's _flush runs even if what follows raises */
	luaL_checktype(L, 3, LUA_TTABLE);
	if (b->srv && (ublk_handoff_pending(&b->srv->handoff) || b->pos < b->n)) {
		reqs = 1; /* listed without a knock to come (handoff.h): no waiting */
		timeout = 0;
	}
	n = epoll_wait(b->epfd, ev, 64, timeout < 0 ? -1 : timeout == 0 ? 0 : (int)(timeout * 1000 + 0.999));
	for (i = 0; i < n; i++) {
		uint64_t what = ev[i].data.u64 & ~0xffffffffULL;

		if (what == EV_HANDOFF) {
			reqs = 1;
			b->edge_unanswered = 1;
		} else if (what == EV_TIMER) {
			uint64_t expirations;

			timer = 1;
			if (read(b->timerfd, &expirations, sizeof(expirations)) < 0) {
				/* EAGAIN: already read */
			}
		} else {
			lua_pushinteger(L, (lua_Integer)(ev[i].data.u64 & 0xffffffffULL));
			lua_rawseti(L, 3, 2 * nfd + 1);
			lua_pushinteger(L, ev[i].events);
			lua_rawseti(L, 3, 2 * nfd + 2);
			nfd++;
		}
	}
	lua_pushboolean(L, reqs);
	lua_pushboolean(L, timer);
	lua_pushinteger(L, nfd);
	return 3;
}

/** dev:_arm_timer(deadline | nil): the timer fires at deadline (core.monotonic seconds); nil disarms. */
static int l_arm_timer(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	if (!lua_isnoneornil(L, 2)) {
		double t = luaL_checknumber(L, 2);

		if (t > 0) {
			its.it_value.tv_sec = (time_t)t;
			its.it_value.tv_nsec = (long)((t - (double)its.it_value.tv_sec) * 1e9);
		}
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1; /* a deadline already past: fire now (zero would disarm) */
	}
	if (timerfd_settime(b->timerfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return ublk_lua_fail(L, "timerfd_settime", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/** dev:_watch(fd, events): wait for epoll events on fd (EPOLLIN 1, EPOLLOUT 4); 0 stops watching. */
static int l_watch(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);
	lua_Integer fd = luaL_checkinteger(L, 2);
	lua_Integer events = luaL_checkinteger(L, 3);
	struct epoll_event ev;

	luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 2, "not a file descriptor");
	memset(&ev, 0, sizeof(ev));
	ev.events = (uint32_t)events;
	ev.data.u64 = EV_FD | (uint64_t)fd;
	if (events == 0) {
		epoll_ctl(b->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
	} else if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, (int)fd, &ev) < 0) {
		if (errno != ENOENT || epoll_ctl(b->epfd, EPOLL_CTL_ADD, (int)fd, &ev) < 0)
			return ublk_lua_fail(L, "epoll_ctl (waiting for a descriptor)", errno);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/** dev:_bridge_fd() -> a descriptor that polls readable when the device has Lua work (requests, timers, fds) */
static int l_fd(lua_State *L)
{
	lua_pushinteger(L, check_bridge(L)->epfd);
	return 1;
}

/** dev:_abandon() -> n: answer EIO for everything Lua holds or has not taken; refuse new requests. */
static int l_abandon(lua_State *L)
{
	lua_pushinteger(L, ublk_bridge_abandon(check_bridge(L)));
	return 1;
}

/** dev:_bridge_stats() -> { requests, batches, errors, passed, held } | nil */
static int l_bridge_stats(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);
	struct ublk_bridge *b = d->bridge;
	int i, held = 0;

	if (!b)
		return 0;
	for (i = 0; i < b->nr_queues * b->depth; i++)
		held += b->slots[i].held;
	lua_createtable(L, 0, 5);
	ublk_lua_set_int(L, "requests", (lua_Integer)b->requests);
	ublk_lua_set_int(L, "batches", (lua_Integer)b->batches);
	ublk_lua_set_int(L, "errors", (lua_Integer)b->errors);
	ublk_lua_set_int(L, "passed", (lua_Integer)b->passed);
	ublk_lua_set_int(L, "held", held);
	return 1;
}

static const luaL_Reg bridge_methods[] = {
	{ "_run", l_run },
	{ "_flush", l_flush },
	{ "_poll", l_poll },
	{ "_arm_timer", l_arm_timer },
	{ "_watch", l_watch },
	{ "_abandon", l_abandon },
	{ "_bridge_stats", l_bridge_stats },
	{ "_bridge_fd", l_fd },
	{ NULL, NULL },
};

void ublk_lua_open_bridge(lua_State *L)
{
	ublk_lua_open_request(L);
	lua_getfield(L, -1, "device_mt");
	lua_getfield(L, -1, "methods");
	luaL_setfuncs(L, bridge_methods, 0);
	lua_pop(L, 2);
}
