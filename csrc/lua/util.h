/* Helpers every Lua binding file shares. A leaf: it calls nothing of the other files. */
#ifndef LUA_UBLK_UTIL_H
#define LUA_UBLK_UTIL_H

#include <lua.h>
#include <stddef.h>

/* The `nil, "what: strerror", errno` triple of io.open and luaposix. */
int ublk_lua_fail(lua_State *L, const char *what, int err);

/* t[name] = v for the table on top of the stack. */
void ublk_lua_set_int(lua_State *L, const char *name, lua_Integer v);

/* A timeout in seconds as poll(2)/epoll_wait(2) milliseconds: negative (or too long for an int, or
 * NaN) waits for ever; others are rounded up to whole milliseconds. */
int ublk_timeout_ms(double seconds);

/* The errno names Lua knows (core.errno): the i-th (NULL past the end), and a name's value (0 for
 * one it does not know). */
const char *ublk_errno_at(size_t i, int *value);
int ublk_errno_by_name(const char *name);

/* "read", "write", ... for UBLK_IO_OP_*; "unknown" for others. */
const char *ublk_op_name(unsigned op);

#endif
