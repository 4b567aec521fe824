/*
 * What the file target's option checks (lua/ublk/targets.lua) learn of a backing store before
 * anything reaches the kernel: core.probe_backing; and core.create_file for a missing one.
 */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <linux/fs.h>
#include <lua.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "module.h"
#include "util.h"

static long long sysfs_number(unsigned maj, unsigned min, const char *attr)
{
	char path[96];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/%s", maj, min, attr);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/**
 * core.probe_backing(path) -> { kind = "file"|"block", size, logical_block_size, physical_block_size,
 * discard, direct, writable } | nil, msg, errno
 * What the file target needs to know before ADD_DEV: the size, the block sizes O_DIRECT needs,
 * whether the backing store discards, whether it takes O_DIRECT at all, and whether we may write.
 */
static int l_probe_backing(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct stat st;
	int fd, dfd, is_blk;
	unsigned long long size = 0;
	int lbs = 512, pbs = 4096;
	long long discard = 1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ublk_lua_fail(L, path, errno);
	if (fstat(fd, &st) < 0) {
		int err = errno;

		close(fd);
		return ublk_lua_fail(L, path, err);
	}
	is_blk = S_ISBLK(st.st_mode);
	if (!is_blk && !S_ISREG(st.st_mode)) {
		close(fd);
		lua_pushnil(L);
		lua_pushfstring(L, "%s: not a regular file or a block device", path);
		lua_pushinteger(L, EINVAL);
		return 3;
	}
	if (is_blk) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &lbs) < 0 ||
		    ioctl(fd, BLKPBSZGET, &pbs) < 0) {
			int err = errno;

			close(fd);
			return ublk_lua_fail(L, path, err);
		}
		discard = sysfs_number(major(st.st_rdev), minor(st.st_rdev), "discard_max_bytes");
	} else {
		size = (unsigned long long)st.st_size;
		pbs = (int)st.st_blksize;
	}
	close(fd);
	dfd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (dfd >= 0)
		close(dfd);

	lua_createtable(L, 0, 7);
	lua_pushstring(L, is_blk ? "block" : "file");
	lua_setfield(L, -2, "kind");
	ublk_lua_set_int(L, "size", (lua_Integer)size);
	ublk_lua_set_int(L, "logical_block_size", lbs);
	ublk_lua_set_int(L, "physical_block_size", pbs);
	lua_pushboolean(L, discard > 0);
	lua_setfield(L, -2, "discard");
	lua_pushboolean(L, dfd >= 0);
	lua_setfield(L, -2, "direct");
	lua_pushboolean(L, access(path, W_OK) == 0);
	lua_setfield(L, -2, "writable");
	return 1;
}

/** core.create_file(path, size) -> true | nil, msg, errno: a new sparse file (never an existing one). */
static int l_create_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	lua_Integer size = luaL_checkinteger(L, 2);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		return ublk_lua_fail(L, path, errno);
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;

		close(fd);
		unlink(path);
		return ublk_lua_fail(L, path, err);
	}
	close(fd);
	lua_pushboolean(L, 1);
	return 1;
}

static const luaL_Reg backing_funcs[] = {
	{ "probe_backing", l_probe_backing },
	{ "create_file", l_create_file },
	{ NULL, NULL },
};

void ublk_lua_open_backing(lua_State *L)
{
	luaL_setfuncs(L, backing_funcs, 0);
}
