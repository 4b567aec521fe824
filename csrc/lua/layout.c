/*
 * core.layout(kind), core.pack(kind, t), core.unpack(kind, bytes [, offset]): the kernel-shared structs
 * to and from plain Lua tables, through the field tables of layout.c. Little-endian, as on every
 * architecture ublk runs on today; the kernel reads the same bytes.
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "../core/layout.h"
#include "module.h"
#include "util.h"

static const struct ublk_layout *check_layout(lua_State *L, int arg)
{
	const char *kind = luaL_checkstring(L, arg);
	const struct ublk_layout *l = ublk_layout_find(kind);

	if (!l)
		luaL_argerror(L, arg, lua_pushfstring(L, "unknown struct kind '%s'", kind));
	return l;
}

static void push_layout(lua_State *L, const struct ublk_layout *l)
{
	size_t i;

	lua_createtable(L, 0, 4);
	lua_pushstring(L, l->kind);
	lua_setfield(L, -2, "kind");
	lua_pushstring(L, l->ctype);
	lua_setfield(L, -2, "ctype");
	lua_pushinteger(L, (lua_Integer)l->size);
	lua_setfield(L, -2, "size");
	lua_createtable(L, (int)l->nfields, 0);
	for (i = 0; i < l->nfields; i++) {
		const struct ublk_field *f = &l->fields[i];
		lua_createtable(L, 0, 4);
		lua_pushstring(L, f->name);
		lua_setfield(L, -2, "name");
		lua_pushinteger(L, (lua_Integer)f->offset);
		lua_setfield(L, -2, "offset");
		lua_pushinteger(L, (lua_Integer)f->size);
		lua_setfield(L, -2, "size");
		lua_pushboolean(L, f->is_signed);
		lua_setfield(L, -2, "signed");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "fields");
}

/** core.layout(kind) -> { kind, ctype, size, fields = { {name, offset, size, signed}, ... } };
 * core.layout() -> list of every layout. */
static int l_layout(lua_State *L)
{
	const struct ublk_layout *l;
	size_t i;

	if (!lua_isnoneornil(L, 1)) {
		push_layout(L, check_layout(L, 1));
		return 1;
	}
	lua_newtable(L);
	for (i = 0; (l = ublk_layout_at(i)) != NULL; i++) {
		push_layout(L, l);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

static int is_int_field(const struct ublk_field *f)
{
	return f->size == 1 || f->size == 2 || f->size == 4 || f->size == 8;
}

static void put_le(unsigned char *p, size_t size, unsigned long long v)
{
	size_t i;

	for (i = 0; i < size; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned long long get_le(const unsigned char *p, size_t size)
{
	unsigned long long v = 0;
	size_t i;

	for (i = 0; i < size; i++)
		v |= (unsigned long long)p[i] << (8 * i);
	return v;
}

/** core.pack(kind, t) -> bytes: every field from t[name] (absent: 0); a value that does not fit is an error. */
static int l_pack(lua_State *L)
{
	const struct ublk_layout *l = check_layout(L, 1);
	unsigned char buf[256];
	size_t i;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (l->size > sizeof(buf))
		return luaL_error(L, "struct %s is larger than the pack buffer", l->ctype);
	memset(buf, 0, l->size);
	for (i = 0; i < l->nfields; i++) {
		const struct ublk_field *f = &l->fields[i];
		int t = lua_getfield(L, 2, f->name);

		if (t == LUA_TNIL) {
			/* zero */
		} else if (is_int_field(f)) {
			int isnum;
			lua_Integer v = lua_tointegerx(L, -1, &isnum);
			unsigned long long u = (unsigned long long)v;

			if (!isnum)
				return luaL_error(L, "%s.%s: expected an integer, got %s", l->kind, f->name,
						  luaL_typename(L, -1));
			if (f->size < 8) {
				long long lo = f->is_signed ? -(1LL << (8 * f->size - 1)) : 0;
				long long hi = f->is_signed ? (1LL << (8 * f->size - 1)) - 1
							    : (long long)((1ULL << (8 * f->size)) - 1);
				if (v < lo || v > hi)
					return luaL_error(L, "%s.%s: %I does not fit in %d bytes", l->kind,
							  f->name, v, (int)f->size);
			}
			put_le(buf + f->offset, f->size, u);
		} else {
			size_t n;
			const char *s = lua_tolstring(L, -1, &n);
			if (!s || n > f->size)
				return luaL_error(L, "%s.%s: expected a string of at most %d bytes", l->kind,
						  f->name, (int)f->size);
			memcpy(buf + f->offset, s, n);
		}
		lua_pop(L, 1);
	}
	lua_pushlstring(L, (const char *)buf, l->size);
	return 1;
}

/** core.unpack(kind, bytes [, offset = 1]) -> t: every field by name; byte arrays as strings. */
static int l_unpack(lua_State *L)
{
	const struct ublk_layout *l = check_layout(L, 1);
	size_t len, i;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 2, &len);
	lua_Integer off = luaL_optinteger(L, 3, 1);

	luaL_argcheck(L, off >= 1 && (size_t)off - 1 <= len, 3, "offset out of range");
	if (len - (size_t)(off - 1) < l->size)
		return luaL_error(L, "%s needs %d bytes, got %d", l->ctype, (int)l->size,
				  (int)(len - (size_t)(off - 1)));
	s += off - 1;
	lua_createtable(L, 0, (int)l->nfields);
	for (i = 0; i < l->nfields; i++) {
		const struct ublk_field *f = &l->fields[i];

		if (is_int_field(f)) {
			unsigned long long v = get_le(s + f->offset, f->size);
			if (f->is_signed && f->size < 8 && (v >> (8 * f->size - 1)))
				v |= ~0ULL << (8 * f->size);
			lua_pushinteger(L, (lua_Integer)v);
		} else {
			lua_pushlstring(L, (const char *)s + f->offset, f->size);
		}
		lua_setfield(L, -2, f->name);
	}
	return 1;
}

static const luaL_Reg layout_funcs[] = {
	{ "layout", l_layout },
	{ "pack", l_pack },
	{ "unpack", l_unpack },
	{ NULL, NULL },
};

void ublk_lua_open_layout(lua_State *L)
{
	luaL_setfuncs(L, layout_funcs, 0);
}
