/*
 * Process plumbing the server and the CLI need and Lua lacks: going to the background with a
 * report pipe back to the parent (`ublk add`), catching SIGINT/SIGTERM/SIGHUP through a signalfd
 * (`dev:run()`), holding them back while a device is made, sending signals (`ublk del`), and a sleep.
 */
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "module.h"
#include "util.h"

#define SIGNALS_MT "ublk.signals"

/* lua_pushlstring(report, len) for l_daemon, in a protected call. */
static int push_report(lua_State *L)
{
	const char *report = lua_touserdata(L, 1);

	lua_pushlstring(L, report ? report : "", (size_t)lua_tointeger(L, 2));
	return 1;
}

/**
 * core.daemon([log_path]) -> "parent", report, pid, status | "child", report_fd
 * Forks. The child starts a new session, takes /dev/null as stdin and log_path (or /dev/null) as
 * stdout and stderr, and gets the write end of a pipe. The parent reads that pipe to its end (the
 * child closes it with core.notify once the device is live, or dies): report is what the child wrote,
 * status its wait status if it has already exited (else nil). Call it before opening any ring.
 */
static int l_daemon(lua_State *L)
{
	const char *log = luaL_optstring(L, 1, "/dev/null");
	char *report = NULL;
	size_t len = 0, cap = 0;
	int pfd[2], status, exited, pushed;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return ublk_lua_fail(L, "pipe", errno);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int err = errno;

		close(pfd[0]);
		close(pfd[1]);
		return ublk_lua_fail(L, "fork", err);
	}
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

		close(pfd[0]);
		setsid();
		/* the parent may be gone (Ctrl-C on `ublk add`): a write to the report pipe must not kill us */
		signal(SIGPIPE, SIG_IGN);
		if (in >= 0)
			dup2(in, 0);
		if (out < 0)
			out = open("/dev/null", O_WRONLY | O_CLOEXEC);
		if (out >= 0) {
			dup2(out, 1);
			dup2(out, 2);
		}
		if (in > 2)
			close(in);
		if (out > 2)
			close(out);
		lua_pushliteral(L, "child");
		lua_pushinteger(L, pfd[1]);
		return 2;
	}
	close(pfd[1]);
	/* read into C memory: nothing may raise while the pipe is open and the child unchecked */
	for (;;) {
		char chunk[512];
		ssize_t n = read(pfd[0], chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (len + (size_t)n > cap) {
			size_t grown = cap ? 2 * cap : 4096;
			char *p;

			while (grown < len + (size_t)n)
				grown *= 2;
			p = realloc(report, grown);
			if (!p)
				continue; /* out of memory: drain the pipe, keep what fitted */
			report = p;
			cap = grown;
		}
		memcpy(report + len, chunk, (size_t)n);
		len += (size_t)n;
	}
	close(pfd[0]);
	exited = waitpid(pid, &status, WNOHANG) == pid;
	/* the report becomes a Lua string in a protected call, so report is freed even when that fails */
	lua_pushcfunction(L, push_report);
	lua_pushlightuserdata(L, report);
	lua_pushinteger(L, (lua_Integer)len);
	pushed = lua_pcall(L, 2, 1, 0);
	free(report);
	if (pushed != LUA_OK)
		return lua_error(L);
	lua_pushliteral(L, "parent");
	lua_insert(L, -2);
	lua_pushinteger(L, pid);
	if (exited)
		lua_pushinteger(L, status);
	else
		lua_pushnil(L);
	return 4;
}

/** core.notify(fd, text): write text to the report pipe and close it. */
static int l_notify(lua_State *L)
{
	int fd = (int)luaL_checkinteger(L, 1);
	size_t len, off = 0;
	const char *text = luaL_checklstring(L, 2, &len);

	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	return 0;
}

struct signal_catcher {
	int fd;       /* -1 once closed */
	sigset_t old; /* the mask to restore */
};

/** core.catch_signals{signo, ...} -> catcher: blocks them and reads them from a signalfd until closed. */
static int l_catch_signals(lua_State *L)
{
	struct signal_catcher *c;
	sigset_t set;
	lua_Integer i, n;

	luaL_checktype(L, 1, LUA_TTABLE);
	c = lua_newuserdatauv(L, sizeof(*c), 0);
	c->fd = -1;
	luaL_setmetatable(L, SIGNALS_MT);
	sigemptyset(&set);
	n = (lua_Integer)luaL_len(L, 1);
	for (i = 1; i <= n; i++) {
		lua_geti(L, 1, i);
		sigaddset(&set, (int)lua_tointeger(L, -1));
		lua_pop(L, 1);
	}
	pthread_sigmask(SIG_BLOCK, &set, &c->old);
	c->fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (c->fd < 0) {
		int err = errno;

		pthread_sigmask(SIG_SETMASK, &c->old, NULL);
		return ublk_lua_fail(L, "signalfd", err);
	}
	return 1;
}

static int l_catcher_fd(lua_State *L)
{
	struct signal_catcher *c = luaL_checkudata(L, 1, SIGNALS_MT);

	lua_pushinteger(L, c->fd);
	return 1;
}

static int l_catcher_close(lua_State *L)
{
	struct signal_catcher *c = luaL_checkudata(L, 1, SIGNALS_MT);

	if (c->fd >= 0) {
		struct signalfd_siginfo si;

		/* a second Ctrl-C while run() was cleaning up must not strike once the mask is restored */
		while (read(c->fd, &si, sizeof(si)) == sizeof(si))
			;
		close(c->fd);
		c->fd = -1;
		pthread_sigmask(SIG_SETMASK, &c->old, NULL);
	}
	return 0;
}

/*
 * Signals held back while a device is half made or half gone (ublk.new, dev:start(), dev:stop(),
 * dev:delete()): the ones a user sends to end a process. Struck in the middle, the process would die
 * and leave a dead device in the kernel; held, they wait until the call is done, and the device is
 * deleted first when one of them is about to end the process.
 */
#define GUARD_MT "ublk.signal_guard"

static const int held_signals[] = { SIGINT, SIGTERM, SIGHUP };

struct signal_guard {
	sigset_t unblock; /* the held signals this guard blocked (not blocked before it) */
	int holding;
};

/** core.hold_signals() -> guard: blocks SIGINT, SIGTERM and SIGHUP in this thread until guard:release()
 * (or its close); one that comes meanwhile waits, pending. */
static int l_hold_signals(lua_State *L)
{
	struct signal_guard *g = lua_newuserdatauv(L, sizeof(*g), 0);
	sigset_t set, old;
	size_t i;

	g->holding = 0;
	sigemptyset(&g->unblock);
	luaL_setmetatable(L, GUARD_MT);
	sigemptyset(&set);
	for (i = 0; i < sizeof(held_signals) / sizeof(held_signals[0]); i++)
		sigaddset(&set, held_signals[i]);
	pthread_sigmask(SIG_BLOCK, &set, &old);
	for (i = 0; i < sizeof(held_signals) / sizeof(held_signals[0]); i++) {
		if (!sigismember(&old, held_signals[i]))
			sigaddset(&g->unblock, held_signals[i]);
	}
	g->holding = 1;
	return 1;
}

/** guard:fatal() -> signo | nil: a held signal that came meanwhile and ends the process once released:
 * its action is the default (terminate), and nothing else had it blocked (a signalfd reading it, as
 * `ublk add` and dev:run() have, makes it not fatal). */
static int l_guard_fatal(lua_State *L)
{
	struct signal_guard *g = luaL_checkudata(L, 1, GUARD_MT);
	sigset_t pending;
	size_t i;

	if (g->holding && sigpending(&pending) == 0) {
		for (i = 0; i < sizeof(held_signals) / sizeof(held_signals[0]); i++) {
			int s = held_signals[i];
			struct sigaction sa;

			if (sigismember(&pending, s) == 1 && sigismember(&g->unblock, s) == 1 &&
			    sigaction(s, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL) {
				lua_pushinteger(L, s);
				return 1;
			}
		}
	}
	lua_pushnil(L);
	return 1;
}

/** guard:release(): unblocks what the guard blocked; a signal that came meanwhile takes effect now. */
static int l_guard_release(lua_State *L)
{
	struct signal_guard *g = luaL_checkudata(L, 1, GUARD_MT);

	if (g->holding) {
		g->holding = 0;
		pthread_sigmask(SIG_UNBLOCK, &g->unblock, NULL);
	}
	return 0;
}

/** core.kill(pid, signo) -> true | nil, msg, errno (signo 0 tests that the process exists). */
static int l_kill(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	int sig = (int)luaL_checkinteger(L, 2);

	luaL_argcheck(L, pid > 0, 1, "pid must be positive");
	if (kill(pid, sig) < 0)
		return ublk_lua_fail(L, "kill", errno);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

/** core.sleep(seconds) */
static int l_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1);
	struct timespec ts;

	if (s <= 0)
		return 0;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return 0;
}

/** core.monotonic() -> seconds, for timeouts */
static int l_monotonic(lua_State *L)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
	return 1;
}

/**
 * core.poll(timeout_seconds, fd, events [, fd, events ...]) -> revents, ... (0s on timeout)
 *   | nil, msg, errno
 * events: 1 readable (POLLIN), 4 writable (POLLOUT); a negative timeout waits for ever. For the
 * Lua thread outside any handler, where waiting may block.
 */
static int l_poll(lua_State *L)
{
	struct pollfd p[8];
	double timeout = luaL_checknumber(L, 1);
	int n = (lua_gettop(L) - 1) / 2, i, ret;

	luaL_argcheck(L, n >= 1 && n <= 8, 2, "one to eight fd, events pairs");
	for (i = 0; i < n; i++) {
		p[i].fd = (int)luaL_checkinteger(L, 2 + 2 * i);
		p[i].events = (short)luaL_checkinteger(L, 3 + 2 * i);
		p[i].revents = 0;
	}
	do
		ret = poll(p, (nfds_t)n, ublk_timeout_ms(timeout));
	while (ret < 0 && errno == EINTR);
	if (ret < 0)
		return ublk_lua_fail(L, "poll", errno);
	for (i = 0; i < n; i++)
		lua_pushinteger(L, p[i].revents);
	return n;
}

/** core.exists(path) -> whether path names something (without opening it: a block device's open
 * may read from the device) */
static int l_exists(lua_State *L)
{
	lua_pushboolean(L, access(luaL_checkstring(L, 1), F_OK) == 0);
	return 1;
}

/** core.mkdir(path) -> true | nil, msg, errno: one directory, mode 0755; one that exists is fine. (Not
 * `os.execute("mkdir ...")`: system() ignores SIGINT while its child runs, which drops one held back.) */
static int l_mkdir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);

	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return ublk_lua_fail(L, path, errno);
	lua_pushboolean(L, 1);
	return 1;
}

/**
 * core.exec(argv, env [, keep_fd [, dir]]) -> nil, msg, errno (only when it fails): replaces this
 * process with argv[1] (searched in PATH) given argv, in directory dir, with env's NAME = value pairs
 * added to the environment, and keep_fd left open across the exec (the report pipe of `ublk recover`).
 */
static int l_exec(lua_State *L)
{
	lua_Integer i, n;
	const char **argv;
	int keep = (int)luaL_optinteger(L, 3, -1);
	const char *dir = luaL_optstring(L, 4, NULL);
	sigset_t none, old;

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checktype(L, 2, LUA_TTABLE);
	n = (lua_Integer)luaL_len(L, 1);
	luaL_argcheck(L, n >= 1 && n < 4096, 1, "a list of 1 to 4095 arguments");
	/* userdata memory: the Lua state frees it when the exec fails */
	argv = lua_newuserdatauv(L, sizeof(*argv) * (size_t)(n + 1), 0);
	for (i = 1; i <= n; i++) {
		lua_geti(L, 1, i);
		argv[i - 1] = luaL_checkstring(L, -1);
		lua_pop(L, 1); /* the string stays alive in the argv table */
	}
	argv[n] = NULL;
	lua_pushnil(L);
	while (lua_next(L, 2)) {
		if (setenv(luaL_checkstring(L, -2), luaL_checkstring(L, -1), 1) < 0)
			return ublk_lua_fail(L, "setenv", errno);
		lua_pop(L, 1);
	}
	if (dir && chdir(dir) < 0)
		return ublk_lua_fail(L, dir, errno);
	if (keep >= 0 && fcntl(keep, F_SETFD, 0) < 0)
		return ublk_lua_fail(L, "keeping the report descriptor", errno);
	fflush(NULL);
	/* the new program starts as a program does: no signal of ours held back */
	sigemptyset(&none);
	pthread_sigmask(SIG_SETMASK, &none, &old);
	execvp(argv[0], (char *const *)(uintptr_t)argv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ublk_lua_fail(L, argv[0], errno);
}

/** core.getcwd() -> path | nil, msg, errno */
static int l_getcwd(lua_State *L)
{
	char *cwd = getcwd(NULL, 0);

	if (!cwd)
		return ublk_lua_fail(L, "getcwd", errno);
	lua_pushstring(L, cwd);
	free(cwd);
	return 1;
}

/**
 * core.wait(pid [, timeout]) -> "exited", code | "killed", signo | "running" (timeout passed)
 *   | nil, msg, errno
 * Waits for child pid to end (timeout seconds, polled every 10 ms; nil: for ever), and reaps it.
 */
static int l_wait(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	double timeout = luaL_optnumber(L, 2, -1);
	struct timespec tick = { 0, 10 * 1000 * 1000 };
	double waited = 0;
	int status;
	pid_t got;

	luaL_argcheck(L, pid > 0, 1, "pid must be positive");
	for (;;) {
		got = waitpid(pid, &status, timeout < 0 ? 0 : WNOHANG);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return ublk_lua_fail(L, "waitpid", errno);
		if (got == pid)
			break;
		if (waited >= timeout) {
			lua_pushliteral(L, "running");
			return 1;
		}
		nanosleep(&tick, NULL);
		waited += 0.01;
	}
	if (WIFSIGNALED(status)) {
		lua_pushliteral(L, "killed");
		lua_pushinteger(L, WTERMSIG(status));
	} else {
		lua_pushliteral(L, "exited");
		lua_pushinteger(L, WEXITSTATUS(status));
	}
	return 2;
}

/** core.owner(path) -> uid, mode (the permission bits) | nil, msg, errno: who may have written a file */
static int l_owner(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct stat st;

	if (stat(path, &st) < 0)
		return ublk_lua_fail(L, path, errno);
	lua_pushinteger(L, st.st_uid);
	lua_pushinteger(L, st.st_mode & 07777);
	return 2;
}

/** core.geteuid() */
static int l_geteuid(lua_State *L)
{
	lua_pushinteger(L, geteuid());
	return 1;
}

static const luaL_Reg process_funcs[] = {
	{ "exists", l_exists },
	{ "mkdir", l_mkdir },
	{ "poll", l_poll },
	{ "daemon", l_daemon },
	{ "notify", l_notify },
	{ "exec", l_exec },
	{ "getcwd", l_getcwd },
	{ "wait", l_wait },
	{ "owner", l_owner },
	{ "geteuid", l_geteuid },
	{ "catch_signals", l_catch_signals },
	{ "hold_signals", l_hold_signals },
	{ "kill", l_kill },
	{ "getpid", l_getpid },
	{ "sleep", l_sleep },
	{ "monotonic", l_monotonic },
	{ NULL, NULL },
};

static const luaL_Reg guard_methods[] = {
	{ "fatal", l_guard_fatal },
	{ "release", l_guard_release },
	{ NULL, NULL },
};

static const luaL_Reg catcher_methods[] = {
	{ "fd", l_catcher_fd },
	{ "close", l_catcher_close },
	{ NULL, NULL },
};

/* A metatable `name` whose __gc and __close are `end` (which must be safe to call twice), methods in __index. */
static void new_class(lua_State *L, const char *name, lua_CFunction end, const luaL_Reg *methods)
{
	luaL_newmetatable(L, name);
	lua_pushcfunction(L, end);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, end);
	lua_setfield(L, -2, "__close");
	lua_newtable(L);
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}

void ublk_lua_open_process(lua_State *L)
{
	new_class(L, SIGNALS_MT, l_catcher_close, catcher_methods);
	new_class(L, GUARD_MT, l_guard_release, guard_methods);
	luaL_setfuncs(L, process_funcs, 0);
	ublk_lua_set_int(L, "SIGINT", SIGINT);
	ublk_lua_set_int(L, "SIGTERM", SIGTERM);
	ublk_lua_set_int(L, "SIGHUP", SIGHUP);
	ublk_lua_set_int(L, "SIGUSR1", SIGUSR1);
	ublk_lua_set_int(L, "SIGKILL", SIGKILL);
}
