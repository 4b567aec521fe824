/*
 * luaopen_ublk_core: the C module behind require("ublk"). It exports the kernel's numbers (from
 * ublk_uapi.h and <errno.h>, so Lua never repeats them), and opens the other files' parts: the
 * struct layouts, the control handle, the process plumbing, the backing probe, the request type, and
 * the device type, whose C methods go to lua/ublk/device.lua alone. Policy, validation and
 * messages live in the Lua modules under lua/ublk/.
 */
#include <errno.h>
#include <lauxlib.h>
#include <liburing.h>
#include <lua.h>
#include <string.h>
#include <unistd.h>

#include "../core/ublk_uapi.h"
#include "module.h"
#include "util.h"

/* Device flags by bit, in the kernel's words (UBLK_F_<NAME> lower-cased). */
static const char *const flag_names[] = {
	"support_zero_copy", "uring_cmd_comp_in_task", "need_get_data", "user_recovery",
	"user_recovery_reissue", "unprivileged_dev", "cmd_ioctl_encode", "user_copy", "zoned",
	"user_recovery_fail_io", "update_size", "auto_buf_reg", "quiesce", "per_io_daemon",
	"buf_reg_off_daemon", "batch_io", "integrity", "safe_stop_dev", "no_auto_part_scan", "shmem_zc",
	/* bit 20: reported by Linux 7.3, which also writes the I/O descriptor size (24) into
	 * dev_info.pad0; not yet in the mainline header we read, so named after that behaviour. */
	"io_desc_size",
};
_Static_assert(sizeof(flag_names) / sizeof(flag_names[0]) == 21, "one name per UBLK_F_ bit 0..20");

static const struct {
	const char *name;
	int nr;
	int dir; /* of the ioctl encoding */
} commands[] = {
#define R _IOC_READ
#define RW (_IOC_READ | _IOC_WRITE)
	{ "GET_QUEUE_AFFINITY", UBLK_CMD_GET_QUEUE_AFFINITY, R }, { "GET_DEV_INFO", UBLK_CMD_GET_DEV_INFO, R },
	{ "ADD_DEV", UBLK_CMD_ADD_DEV, RW },		{ "DEL_DEV", UBLK_CMD_DEL_DEV, RW },
	{ "START_DEV", UBLK_CMD_START_DEV, RW },	{ "STOP_DEV", UBLK_CMD_STOP_DEV, RW },
	{ "SET_PARAMS", UBLK_CMD_SET_PARAMS, RW },	{ "GET_PARAMS", UBLK_CMD_GET_PARAMS, R },
	{ "START_USER_RECOVERY", UBLK_CMD_START_USER_RECOVERY, RW },
	{ "END_USER_RECOVERY", UBLK_CMD_END_USER_RECOVERY, RW },
	{ "GET_DEV_INFO2", UBLK_CMD_GET_DEV_INFO2, R },	{ "GET_FEATURES", UBLK_CMD_GET_FEATURES, R },
	{ "DEL_DEV_ASYNC", UBLK_CMD_DEL_DEV_ASYNC, R },	{ "UPDATE_SIZE", UBLK_CMD_UPDATE_SIZE, RW },
	{ "QUIESCE_DEV", UBLK_CMD_QUIESCE_DEV, RW },	{ "TRY_STOP_DEV", UBLK_CMD_TRY_STOP_DEV, RW },
	{ "REG_BUF", UBLK_CMD_REG_BUF, RW },		{ "UNREG_BUF", UBLK_CMD_UNREG_BUF, RW },
#undef R
#undef RW
};

static const struct {
	const char *name;
	int nr;
} io_commands[] = {
	{ "FETCH_REQ", UBLK_IO_FETCH_REQ },	      { "COMMIT_AND_FETCH_REQ", UBLK_IO_COMMIT_AND_FETCH_REQ },
	{ "NEED_GET_DATA", UBLK_IO_NEED_GET_DATA },     { "REGISTER_IO_BUF", UBLK_IO_REGISTER_IO_BUF },
	{ "UNREGISTER_IO_BUF", UBLK_IO_UNREGISTER_IO_BUF }, { "PREP_IO_CMDS", UBLK_IO_PREP_IO_CMDS },
	{ "COMMIT_IO_CMDS", UBLK_IO_COMMIT_IO_CMDS },   { "FETCH_IO_CMDS", UBLK_IO_FETCH_IO_CMDS },
};

/**
 * core.probe_ring() -> { sqe128 = true, uring_cmd = bool, last_op = n } | nil, msg, errno
 * Sets up a small SQE128/CQE32 ring as the control path does, and asks the kernel which ops it has.
 */
static int l_probe_ring(lua_State *L)
{
	struct io_uring ring;
	struct io_uring_probe *probe;
	int ret;

	lua_createtable(L, 0, 3); /* before the ring: running out of memory here leaks nothing */
	ret = io_uring_queue_init(2, &ring, IORING_SETUP_SQE128 | IORING_SETUP_CQE32);
	if (ret < 0)
		return ublk_lua_fail(L, "io_uring_setup(SQE128|CQE32)", -ret);
	probe = io_uring_get_probe_ring(&ring);
	io_uring_queue_exit(&ring);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "sqe128");
	if (probe) {
		/* read out and freed before the table is filled: lua_setfield may raise (out of memory) */
		int uring_cmd = io_uring_opcode_supported(probe, IORING_OP_URING_CMD);
		int last_op = probe->last_op;

		io_uring_free_probe(probe);
		lua_pushboolean(L, uring_cmd);
		lua_setfield(L, -2, "uring_cmd");
		ublk_lua_set_int(L, "last_op", last_op);
	}
	return 1;
}

/** core.strerror(errno) -> the C library's text */
static int l_strerror(lua_State *L)
{
	lua_pushstring(L, strerror((int)luaL_checkinteger(L, 1)));
	return 1;
}

/** core.ioc(dir, nr, size) -> the ioctl encoding (_IOC) of a command number */
static int l_ioc(lua_State *L)
{
	lua_Integer dir = luaL_checkinteger(L, 1), nr = luaL_checkinteger(L, 2);
	lua_Integer size = luaL_optinteger(L, 3, sizeof(struct ublksrv_ctrl_cmd));

	lua_pushinteger(L, (lua_Integer)(unsigned)_IOC((unsigned)dir, 'u', (unsigned)nr, (unsigned)size));
	return 1;
}

static const luaL_Reg module_funcs[] = {
	{ "probe_ring", l_probe_ring },
	{ "strerror", l_strerror },
	{ "ioc", l_ioc },
	{ NULL, NULL },
};

static void open_consts(lua_State *L)
{
	const char *name;
	size_t i;
	int value;

	lua_newtable(L);
	for (i = 0; (name = ublk_errno_at(i, &value)) != NULL; i++)
		ublk_lua_set_int(L, name, value);
	lua_setfield(L, -2, "errno");

	lua_createtable(L, (int)(sizeof(flag_names) / sizeof(flag_names[0])), 0);
	for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++) {
		lua_pushstring(L, flag_names[i]);
		lua_rawseti(L, -2, (lua_Integer)i); /* by bit number, from 0 */
	}
	lua_setfield(L, -2, "flag_names");

	lua_createtable(L, 0, (int)(sizeof(commands) / sizeof(commands[0])));
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		lua_createtable(L, 0, 4);
		lua_pushstring(L, commands[i].name);
		lua_setfield(L, -2, "name");
		ublk_lua_set_int(L, "nr", commands[i].nr);
		ublk_lua_set_int(L, "ioctl", (lua_Integer)(unsigned)_IOC((unsigned)commands[i].dir, 'u',
								 (unsigned)commands[i].nr,
								 sizeof(struct ublksrv_ctrl_cmd)));
		lua_pushboolean(L, commands[i].nr <= UBLK_CMD_GET_DEV_INFO2);
		lua_setfield(L, -2, "has_legacy");
		lua_setfield(L, -2, commands[i].name);
	}
	lua_setfield(L, -2, "commands");

	lua_createtable(L, 0, (int)(sizeof(io_commands) / sizeof(io_commands[0])));
	for (i = 0; i < sizeof(io_commands) / sizeof(io_commands[0]); i++) {
		lua_createtable(L, 0, 3);
		lua_pushstring(L, io_commands[i].name);
		lua_setfield(L, -2, "name");
		ublk_lua_set_int(L, "nr", io_commands[i].nr);
		ublk_lua_set_int(L, "ioctl", (lua_Integer)(unsigned)_IOWR('u', io_commands[i].nr, struct ublksrv_io_cmd));
		lua_setfield(L, -2, io_commands[i].name);
	}
	lua_setfield(L, -2, "io_commands");

	lua_createtable(L, 0, 16);
	ublk_lua_set_int(L, "MAX_NR_QUEUES", UBLK_MAX_NR_QUEUES);
	ublk_lua_set_int(L, "MAX_QUEUE_DEPTH", UBLK_MAX_QUEUE_DEPTH);
	ublk_lua_set_int(L, "IO_BUF_BITS", UBLK_IO_BUF_BITS);
	ublk_lua_set_int(L, "MAX_IO_BUF_BYTES", 1LL << UBLK_IO_BUF_BITS);
	ublk_lua_set_int(L, "FEATURES_LEN", UBLK_FEATURES_LEN);
	ublk_lua_set_int(L, "MIN_SEGMENT_SIZE", UBLK_MIN_SEGMENT_SIZE);
	ublk_lua_set_int(L, "IORING_OP_URING_CMD", IORING_OP_URING_CMD);
	ublk_lua_set_int(L, "IOC_READ", _IOC_READ);
	ublk_lua_set_int(L, "IOC_WRITE", _IOC_WRITE);
	ublk_lua_set_int(L, "PAGE_SIZE", sysconf(_SC_PAGESIZE));
	ublk_lua_set_int(L, "ONLINE_CPUS", sysconf(_SC_NPROCESSORS_ONLN));
	ublk_lua_set_int(L, "ATTR_READ_ONLY", UBLK_ATTR_READ_ONLY);
	ublk_lua_set_int(L, "ATTR_ROTATIONAL", UBLK_ATTR_ROTATIONAL);
	ublk_lua_set_int(L, "ATTR_VOLATILE_CACHE", UBLK_ATTR_VOLATILE_CACHE);
	ublk_lua_set_int(L, "ATTR_FUA", UBLK_ATTR_FUA);
	ublk_lua_set_int(L, "PARAM_TYPE_BASIC", UBLK_PARAM_TYPE_BASIC);
	ublk_lua_set_int(L, "PARAM_TYPE_DISCARD", UBLK_PARAM_TYPE_DISCARD);
	ublk_lua_set_int(L, "PARAM_TYPE_DEVT", UBLK_PARAM_TYPE_DEVT);
	ublk_lua_set_int(L, "PARAM_TYPE_ZONED", UBLK_PARAM_TYPE_ZONED);
	ublk_lua_set_int(L, "PARAM_TYPE_DMA_ALIGN", UBLK_PARAM_TYPE_DMA_ALIGN);
	ublk_lua_set_int(L, "PARAM_TYPE_SEGMENT", UBLK_PARAM_TYPE_SEGMENT);
	ublk_lua_set_int(L, "PARAM_TYPE_INTEGRITY", UBLK_PARAM_TYPE_INTEGRITY);
	lua_setfield(L, -2, "const");

	luaL_setfuncs(L, module_funcs, 0);
}

/** core.take_internals() -> the device's C methods and class, for lua/ublk/device.lua: once per
 * opening of the module, so that no other code reaches them. */
static int l_take_internals(lua_State *L)
{
	if (lua_isnil(L, lua_upvalueindex(1)))
		return luaL_error(L, "ublk.core: the device internals were already taken (by ublk.device)");
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushnil(L);
	lua_replace(L, lua_upvalueindex(1));
	return 1;
}

__attribute__((visibility("default"))) int luaopen_ublk_core(lua_State *L);

int luaopen_ublk_core(lua_State *L)
{
	lua_newtable(L);
	ublk_lua_open_layout(L);
	ublk_lua_open_control(L);
	ublk_lua_open_process(L);
	ublk_lua_open_backing(L);
	open_consts(L);
	ublk_lua_open_request(L);
	lua_newtable(L); /* the internals */
	ublk_lua_open_device(L);
	ublk_lua_open_dispatch(L);
	ublk_lua_open_request_internals(L);
	lua_pushcclosure(L, l_take_internals, 1);
	lua_setfield(L, -2, "take_internals");
	return 1;
}
