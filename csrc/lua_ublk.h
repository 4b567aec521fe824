/* What the Lua binding files of ublk.core share. */
#ifndef LUA_UBLK_LUA_H
#define LUA_UBLK_LUA_H

#include <lua.h>

#define UBLK_CONTROL_MT "ublk.control"
#define UBLK_DEVICE_MT "ublk.device"

void ublk_lua_open_layout(lua_State *L);  /* layout, pack, unpack */
void ublk_lua_open_control(lua_State *L); /* open_control, device, the two metatables */
void ublk_lua_open_consts(lua_State *L);  /* errno, flags, commands, limits, probes */

/* The `nil, "what: strerror", errno` triple of io.open and luaposix. */
int ublk_lua_fail(lua_State *L, const char *what, int err);

#endif
