/* What the Lua binding files of ublk.core share. */
#ifndef LUA_UBLK_LUA_H
#define LUA_UBLK_LUA_H

#include <lua.h>

#define UBLK_CONTROL_MT "ublk.control"
#define UBLK_DEVICE_MT "ublk.device"

struct ublk_ctrl;
struct ublk_server;
struct ublk_bridge;

/* ublk.device: owns one kernel device and, once served, its data plane. */
struct device_handle {
	struct ublk_ctrl *ctrl;   /* counted reference */
	long long dev_id;         /* -1: owns no kernel device */
	struct ublk_server *srv;  /* the queues and target, or NULL */
	int was_served;           /* queues ran once: delete with DEL_DEV_ASYNC */
	struct ublk_bridge *bridge; /* the Lua side of hooked requests, or NULL */
};

void ublk_lua_open_layout(lua_State *L);  /* layout, pack, unpack */
void ublk_lua_open_control(lua_State *L); /* open_control, device, the two metatables */
void ublk_lua_open_consts(lua_State *L);  /* errno, flags, commands, limits, probes */
void ublk_lua_open_server(lua_State *L);  /* the device's data-plane methods; probe_backing */
void ublk_lua_open_process(lua_State *L); /* daemon, notify, signal catcher, kill */
void ublk_lua_open_bridge(lua_State *L);  /* requests for Lua: the device's bridge methods */

/* Stop the device's queues (STOP_DEV first when they run) and free its data plane. */
void ublk_device_stop_server(struct device_handle *d);

/* Attach a bridge to a device just served with hooks (hook_mask != 0): 0 or -errno. */
int ublk_bridge_attach(struct device_handle *d, int hooks_pass);
/* Answer -EIO for every request the Lua side still holds or has not taken, and refuse new ones
 * (answered EIO without Lua from then on): what a stop needs before joining. How many were answered. */
int ublk_bridge_abandon(struct ublk_bridge *b);
/* Inline queues (server.h): watch their rings once the server started (0 or -errno; nothing to do
 * for other devices); after ublk_bridge_abandon, serve the rings without Lua: EIO for what would go
 * to Lua, the C target for the rest (the collector's STOP_DEV, which no dispatch serves). */
int ublk_bridge_watch_rings(struct ublk_bridge *b);
void ublk_bridge_pump(struct ublk_bridge *b);
/* After the server is freed; then, at the device's end, free. */
void ublk_bridge_detach(struct ublk_bridge *b);
void ublk_bridge_free(struct ublk_bridge *b);

/* EIO for "EIO": the errno of a name core.errno knows, or 0. */
int ublk_errno_by_name(const char *name);

/* t[name] = v for the table on top of the stack. */
void ublk_lua_set_int(lua_State *L, const char *name, lua_Integer v);

/* The `nil, "what: strerror", errno` triple of io.open and luaposix. */
int ublk_lua_fail(lua_State *L, const char *what, int err);

/* A timeout in seconds as poll(2)/epoll_wait(2) milliseconds: negative (or too long for an int, or
 * NaN) waits for ever; others are rounded up to whole milliseconds. */
int ublk_timeout_ms(double seconds);

#endif
