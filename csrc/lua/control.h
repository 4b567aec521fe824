/* ublk.control: the control handle (control.c). */
#ifndef LUA_UBLK_CONTROL_H
#define LUA_UBLK_CONTROL_H

#include <lua.h>

#include "../core/ctrl.h"

#define UBLK_CONTROL_MT "ublk.control"

/* The ring of the open control handle at arg (raises for anything else, or a closed one). */
struct ublk_ctrl *ublk_lua_check_control(lua_State *L, int arg);

#endif
