/*
 * A dispatch of a device's Lua side (the functions lua/ublk/handler.lua drives it with): poll for
 * what is ready, run the handlers of the requests taken, flush their answers; the handlers' timer
 * and the descriptors they wait for.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "device.h"
#include "request.h"
#include "rings.h"
#include "module.h"
#include "util.h"

static struct ublk_bridge *check_bridge(lua_State *L)
{
	struct device_handle *d = luaL_checkudata(L, 1, UBLK_DEVICE_MT);

	if (!d->bridge)
		luaL_error(L, "this device has no Lua handler or hooks, or was never started");
	return d->bridge;
}

/*
 * Runners. A runner is a coroutine whose body (runner_next) makes each taken request's userdata and
 * calls its handler in a protected call, one request after another, until the batch is done; then
 * it yields batch_done and waits in the pool for the next batch. So a batch costs one resume, not
 * one per request. A handler that yields takes its runner with it: from then on that coroutine is
 * the request's alone (the scheduler resumes it; when the handler returns, handler_k answers the
 * request and the coroutine ends), and run goes on with another runner.
 *
 * A runner's upvalues: the device, the handlers (by op number), on_error, the request metatable,
 * and the request it runs now (so that run can tell on_yield which request yielded; a runner taken from the pool comes with its function, which holds them). Its stack:
 * 1 the message handler of its protected calls, 2 the request, then the handler's values.
 */
enum { U_DEV = 1, U_HANDLERS, U_ON_ERROR, U_REQUEST_MT, U_CURRENT, NR_RUNNER_UPVALUES };
enum { S_MSGH = 1, S_REQ };

static char batch_done; /* what a runner yields at the end of a batch: only its address matters */


/* The message handler of a handler's protected call: the error and where it came from. */
static int handler_traceback(lua_State *co)
{
	const char *msg;

	if (lua_type(co, 1) == LUA_TSTRING || lua_type(co, 1) == LUA_TNUMBER)
		msg = lua_tostring(co, 1);
	else
		msg = lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, 1));
	luaL_traceback(co, co, msg, 1);
	return 1;
}

/* on_error(the value at req, the message at msg, raised); what it raises is dropped (the batch must
 * go on). For the runners (on_error an upvalue, the request at S_REQ) and for run. */
static void call_on_error(lua_State *L, int on_error, int req, int msg, int raised)
{
	lua_checkstack(L, 4); /* above however many values the handler returned */
	lua_pushvalue(L, on_error);
	lua_pushvalue(L, req);
	lua_pushvalue(L, msg);
	lua_pushboolean(L, raised);
	if (lua_pcall(L, 3, 0, 0) != LUA_OK)
		lua_pop(L, 1);
}

/* Answer the request at S_REQ from how its handler ended: status LUA_OK with its values from S_REQ
 * + 1 (what is wrong with them goes to on_error(req, message, false)), or an error status with the
 * traceback on top (EIO, and on_error(req, traceback, true)). Nothing is answered that was
 * answered or deferred meanwhile. */
static void finish(lua_State *co, struct request_handle *v, int status)
{
	if (status != LUA_OK) {
		request_fail(v);
		call_on_error(co, lua_upvalueindex(U_ON_ERROR), S_REQ, lua_gettop(co), 1);
	} else if (request_live(v) && !v->deferred && ublk_request_answer(co, v, S_REQ + 1, lua_gettop(co) - S_REQ) < 0) {
		call_on_error(co, lua_upvalueindex(U_ON_ERROR), S_REQ, lua_gettop(co), 0);
	}
}

/* A handler that yielded has ended (returned, or raised after a yield). */
static int handler_k(lua_State *co, int status, lua_KContext ctx)
{
	(void)ctx;
	finish(co, lua_touserdata(co, S_REQ), status == LUA_YIELD ? LUA_OK : status);
	return 0; /* the runner ends here: since the yield it was this request's alone */
}

static int runner_next(lua_State *co);

static int runner_k(lua_State *co, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	return runner_next(co);
}

static int runner_next(lua_State *co)
{
	struct device_handle *d = lua_touserdata(co, lua_upvalueindex(U_DEV));

	for (;;) {
		struct ublk_bridge *b = d->bridge; /* again each time: a handler may stop the device */
		struct ublk_handoff_req h;
		struct request_handle *v;
		int status;

		lua_settop(co, S_MSGH);
		if (!b || !b->srv || b->pos == b->n) {
			lua_pushlightuserdata(co, &batch_done);
			return lua_yieldk(co, 1, 0, runner_k);
		}
		h = b->taken[b->pos++];
		if (!bridge_slot(b, h.q_id, h.tag)->held)
			continue; /* a stop answered it meanwhile */
		/* the handler first: an op the table lacks costs no request, and no allocation (which may
		 * run a finalizer) comes between the held check and this answer */
		if (lua_rawgeti(co, lua_upvalueindex(U_HANDLERS), ublksrv_get_op(&h.iod)) != LUA_TFUNCTION) {
			ublk_bridge_answer(b, h.q_id, h.tag, -EOPNOTSUPP, 0);
			continue;
		}
		/* until the request exists, a failure (out of memory) names none, not the one before */
		lua_pushnil(co);
		lua_replace(co, lua_upvalueindex(U_CURRENT));
		v = ublk_request_push(co, lua_upvalueindex(U_DEV), lua_upvalueindex(U_REQUEST_MT), &h);
		lua_insert(co, S_REQ); /* the request, then its handler */
		lua_copy(co, S_REQ, lua_upvalueindex(U_CURRENT));
		lua_pushvalue(co, S_REQ);
		b->started++;
		status = lua_pcallk(co, 1, LUA_MULTRET, S_MSGH, 0, handler_k);
		finish(co, v, status);
	}
}

static int runner_main(lua_State *co)
{
	lua_settop(co, 0);
	lua_pushcfunction(co, handler_traceback); /* S_MSGH */
	return runner_next(co);
}

/**
 * run(dev, handlers, pool, workers, on_yield, on_error) -> n
 * Takes the requests for Lua (handed over by queue threads, or reaped from Lua-owned rings) and
 * runs each one's handler (handlers[op], by
 * op number) on a runner (above): one from pool (a list of coroutine, function pairs) or a new
 * one, which goes into the weak set workers. A handler that returns is answered at once; one that
 * yields is given to on_yield(co, req, yielded...) (at most 4 values); one that raises is answered
 * EIO and its traceback given to on_error(req, traceback, true); values that mean nothing are
 * answered EIO and what is wrong with them given to on_error(req, message, false). An op the table
 * lacks is answered EOPNOTSUPP. Answers go back to the queues at the end of the dispatch (flush),
 * or once ANSWER_EVERY wait for a queue. Returns how many handlers it started.
 *
 * Re-entrant and safe against errors: every request is marked held when taken and the batch's
 * position moves before its handler runs, so a handler that dispatches again, a stop in the middle
 * (which answers whatever is held) or an error escaping from here runs no request twice and
 * forgets none (the next run goes on where this one stopped).
 */
static int l_run(lua_State *L)
{
	enum { DEV = 1, HANDLERS, POOL, WORKERS, ON_YIELD, ON_ERROR, TOP = ON_ERROR, REQ = TOP + 3 };
	struct ublk_bridge *b = check_bridge(L);
	struct device_handle *d = lua_touserdata(L, DEV); /* check_bridge checked it */
	uint64_t outer = b->started;
	lua_Integer started;

	luaL_checktype(L, HANDLERS, LUA_TTABLE);
	luaL_checktype(L, POOL, LUA_TTABLE);
	luaL_checktype(L, WORKERS, LUA_TTABLE);
	luaL_checktype(L, ON_YIELD, LUA_TFUNCTION);
	luaL_checktype(L, ON_ERROR, LUA_TFUNCTION);
	lua_settop(L, TOP);
	luaL_checkstack(L, 24, NULL);
	if (!b->srv) {
		lua_pushinteger(L, 0);
		return 1;
	}
	ublk_bridge_take(b);
	while ((b = d->bridge) && b->srv && b->pos < b->n) {
		lua_Integer pooled = (lua_Integer)lua_rawlen(L, POOL);
		int co_i = TOP + 1, fn_i = TOP + 2, status, nres = 0; /* and REQ, once a runner stops short */
		lua_State *co;

		if (pooled >= 2) {
			lua_rawgeti(L, POOL, pooled - 1);
			lua_rawgeti(L, POOL, pooled);
			lua_pushnil(L);
			lua_rawseti(L, POOL, pooled);
			lua_pushnil(L);
			lua_rawseti(L, POOL, pooled - 1);
			co = lua_tothread(L, co_i);
		} else {
			co = lua_newthread(L);
			lua_pushvalue(L, co_i);
			lua_pushboolean(L, 1);
			lua_rawset(L, WORKERS);
			lua_pushvalue(L, DEV);
			lua_pushvalue(L, HANDLERS);
			lua_pushvalue(L, ON_ERROR);
			ublk_request_metatable(L);
			lua_pushnil(L); /* U_CURRENT */
			lua_pushcclosure(L, runner_main, NR_RUNNER_UPVALUES - 1);
			lua_pushvalue(L, fn_i);
			lua_xmove(L, co, 1);
		}
		status = lua_resume(co, L, 0, &nres);
		if (status == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == &batch_done) {
			lua_pop(co, 1); /* batch_done; back to the pool, for the next batch (its stack keeps S_MSGH) */
			pooled = (lua_Integer)lua_rawlen(L, POOL);
			lua_rawseti(L, POOL, pooled + 2); /* fn */
			lua_rawseti(L, POOL, pooled + 1); /* co */
			lua_settop(L, TOP);
			break;
		}
		lua_getupvalue(L, fn_i, U_CURRENT); /* the request whose handler yielded or failed */
		if (status == LUA_YIELD) {
			struct request_handle *v = lua_touserdata(L, -1);

			if (nres > 4) { /* the scheduler's protocol yields at most 4 values */
				lua_pop(co, nres - 4);
				nres = 4;
			}
			lua_pushvalue(L, ON_YIELD);
			lua_pushvalue(L, co_i);
			lua_pushvalue(L, REQ);
			lua_xmove(co, L, nres);
			if (lua_pcall(L, 2 + nres, 0, 0) != LUA_OK) {
				if (v)
					request_fail(v); /* nobody will resume it */
				call_on_error(L, ON_ERROR, REQ, -1, 1);
			}
		} else if (status != LUA_OK && (b = d->bridge) && b->pos > 0) {
			/* the runner's own code failed (out of memory), before or after a handler: the
			 * request it took last fails, if still held */
			const struct ublk_handoff_req *h = &b->taken[b->pos - 1];

			if (bridge_slot(b, h->q_id, h->tag)->held)
				ublk_bridge_answer(b, h->q_id, h->tag, -EIO, 0);
			lua_xmove(co, L, 1);
			call_on_error(L, ON_ERROR, REQ, -1, 1);
		}
		lua_settop(L, TOP);
	}
	/* ours only: a handler's nested run counted its own and returned them to its caller */
	b = d->bridge;
	started = b ? (lua_Integer)b->started : (lua_Integer)outer;
	if (b)
		b->started = outer;
	lua_pushinteger(L, started - (lua_Integer)outer);
	return 1;
}

/** flush(dev): the end of a dispatch (its to-be-closed variable calls this even when the
 * dispatch raised). Sends the answers collected so far, one batch per queue; and when work is left
 * that no knock will announce, knocks itself, so that dev:fd() polls readable again. */
static int l_flush(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);

	if (b->batching > 0)
		b->batching--;
	ublk_bridge_flush(b);
	if (b->srv && ((b->edge_unanswered && ublk_handoff_pending(&b->srv->handoff)) || b->pos < b->n ||
		       ublk_rings_ready(b->srv) == 2)) {
		/* a nested dispatch took the knock's edge but not the list, or an error left part of
		 * a batch: no queue thread will knock while the list is not empty; or a failed submit
		 * left answers in a ring, which its fd does not show (it polls on completions) */
		b->edge_unanswered = 0;
		ublk_handoff_knock(&b->srv->handoff);
	}
	return 0;
}

/**
 * poll(dev, timeout_seconds, fds) -> requests_ready, timer_fired, nfds
 * Waits up to timeout (0: not at all; negative: for ever) for the device's descriptor; fds[2i-1], fds[2i] get each
 * watched descriptor that is ready and its epoll events. Starts a dispatch (answers are batched
 * until flush).
 */
static int l_poll(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);
	double timeout = luaL_optnumber(L, 2, 0);
	struct epoll_event ev[64];
	int n, i, ready, reqs = 0, timer = 0, nfd = 0;

	b->batching++; /* first: the dispatch's flush runs even if what follows raises */
	luaL_checktype(L, 3, LUA_TTABLE);
	ready = ublk_rings_ready(b->srv);
	if (b->srv && (ublk_handoff_pending(&b->srv->handoff) || b->pos < b->n || ready == 1)) {
		reqs = 1; /* listed without a knock to come (handoff.h): no waiting */
		timeout = 0;
	} else if (ready == 2) {
		/* answers a failed submit left: try again within 1 ms, not in a tight loop */
		reqs = 1;
		if (timeout < 0 || timeout > 0.001)
			timeout = 0.001;
	}
	/* stopped (descriptors closed): nothing will come */
	n = b->epfd < 0 ? 0 : epoll_wait(b->epfd, ev, 64, ublk_timeout_ms(timeout));
	if (n < 0 && errno == EINTR && ublk_rings_ready(b->srv))
		reqs = 1; /* the kernel's task work for the rings interrupted the wait: they are in now */
	for (i = 0; i < n; i++) {
		uint64_t what = ev[i].data.u64 & ~0xffffffffULL;

		if (what == EV_HANDOFF) {
			reqs = 1;
			b->edge_unanswered = 1;
		} else if (what == EV_RING) {
			reqs = 1;
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

/** arm_timer(dev, deadline | nil): the timer fires at deadline (core.monotonic seconds); nil disarms. */
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
	if (b->timerfd >= 0 && timerfd_settime(b->timerfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		return ublk_lua_fail(L, "timerfd_settime", errno);
	lua_pushboolean(L, 1);
	return 1;
}

/** watch(dev, fd, events): wait for epoll events on fd (EPOLLIN 1, EPOLLOUT 4); 0 stops watching. */
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
	if (b->epfd < 0) {
		/* stopped: nothing is watched any more */
	} else if (events == 0) {
		epoll_ctl(b->epfd, EPOLL_CTL_DEL, (int)fd, NULL);
	} else if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, (int)fd, &ev) < 0) {
		if (errno != ENOENT || epoll_ctl(b->epfd, EPOLL_CTL_ADD, (int)fd, &ev) < 0)
			return ublk_lua_fail(L, "epoll_ctl (waiting for a descriptor)", errno);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/** bridge_fd(dev) -> a descriptor that polls readable when the device has Lua work (requests, timers, fds) */
static int l_fd(lua_State *L)
{
	struct ublk_bridge *b = check_bridge(L);

	if (b->epfd < 0)
		return luaL_error(L, "dev:fd: the device was stopped: it has no Lua work to poll for any more");
	lua_pushinteger(L, b->epfd);
	return 1;
}

/** abandon(dev) -> n: answer EIO for everything Lua holds or has not taken; refuse new requests. */
static int l_abandon(lua_State *L)
{
	lua_pushinteger(L, ublk_bridge_abandon(check_bridge(L)));
	return 1;
}

/** bridge_stats(dev) -> { requests, batches, errors, passed, held } | nil */
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

static const luaL_Reg dispatch_funcs[] = {
	{ "run", l_run },
	{ "flush", l_flush },
	{ "poll", l_poll },
	{ "arm_timer", l_arm_timer },
	{ "watch", l_watch },
	{ "abandon", l_abandon },
	{ "bridge_stats", l_bridge_stats },
	{ "bridge_fd", l_fd },
	{ NULL, NULL },
};

void ublk_lua_open_dispatch(lua_State *L)
{
	luaL_setfuncs(L, dispatch_funcs, 0);
}
