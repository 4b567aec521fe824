/*
 * ublk.device (device.c): owns one kernel device and, once served, its data plane and, with a
 * handler or hooks, its bridge. The whole type is device.c: its metatable, its C methods (given to
 * lua/ublk/device.lua once, in a private table that no device leads to), __gc and __close.
 */
#ifndef LUA_UBLK_DEVICE_H
#define LUA_UBLK_DEVICE_H

#include <lua.h>

#include "../core/ctrl.h"
#include "../core/server.h"

#define UBLK_DEVICE_MT "ublk.device"

struct ublk_bridge;

struct device_handle {
	struct ublk_ctrl *ctrl;     /* counted reference */
	long long dev_id;           /* -1: owns no kernel device */
	struct ublk_server *srv;    /* the queues and target, or NULL */
	int was_served;             /* queues ran once: delete with DEL_DEV_ASYNC */
	struct ublk_bridge *bridge; /* the Lua side of its requests, or NULL */
};

#endif
