/* The parts of luaopen_ublk_core (module.c), one per file: each puts its functions into the table
 * on top of the stack (the module's, or for device, dispatch and request_internals the private one). */
#ifndef LUA_UBLK_MODULE_H
#define LUA_UBLK_MODULE_H

#include <lua.h>

void ublk_lua_open_layout(lua_State *L);   /* core.layout, pack, unpack */
void ublk_lua_open_control(lua_State *L);  /* core.open_control; ublk.control's metatable */
void ublk_lua_open_process(lua_State *L);  /* daemon, signals, kill, sleep, poll, ... */
void ublk_lua_open_backing(lua_State *L);  /* core.probe_backing, create_file */
void ublk_lua_open_request(lua_State *L);  /* ublk.request's metatable (registry) */
void ublk_lua_open_request_internals(lua_State *L); /* fail_request, for the scheduler */
void ublk_lua_open_device(lua_State *L);   /* ublk.device's metatable; its C methods, class */
void ublk_lua_open_dispatch(lua_State *L); /* the dispatch's functions */

#endif
