/* The helpers of util.h. */
#include "util.h"

#include <errno.h>
#include <string.h>

int ublk_lua_fail(lua_State *L, const char *what, int err)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, strerror(err));
	lua_pushinteger(L, err);
	return 3;
}

void ublk_lua_set_int(lua_State *L, const char *name, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, name);
}

int ublk_timeout_ms(double seconds)
{
	if (!(seconds >= 0) || seconds * 1000 >= 2147483647.0)
		return -1;
	if (seconds == 0)
		return 0;
	return (int)(seconds * 1000 + 0.999);
}

static const struct {
	const char *name;
	int value;
} errnos[] = {
#define E(x) { #x, x }
	E(EPERM),  E(ENOENT),	  E(ESRCH),	 E(EINTR),     E(EIO),	       E(ENXIO),      E(E2BIG),
	E(EBADF),  E(EAGAIN),	  E(ENOMEM),	 E(EACCES),    E(EFAULT),      E(EBUSY),      E(EEXIST),
	E(ENODEV), E(ENOTDIR),	  E(EINVAL),	 E(ENFILE),    E(EMFILE),      E(ENOTTY),     E(EFBIG),
	E(ENOSPC), E(EROFS),	  E(ERANGE),	 E(ENOSYS),    E(EOPNOTSUPP), E(ETIMEDOUT), E(EALREADY),
	E(ECANCELED), E(EOVERFLOW), E(EBADFD), E(ENOTSUP), E(EDOM), E(ESPIPE),
	/* the ones the block layer passes on to the submitter (errno_to_blk_status), besides those above */
	E(ENOLINK), E(EREMOTEIO), E(EBADE), E(ENODATA), E(EILSEQ), E(ETIME), E(ETOOMANYREFS),
#undef E
};

const char *ublk_errno_at(size_t i, int *value)
{
	if (i >= sizeof(errnos) / sizeof(errnos[0]))
		return NULL;
	*value = errnos[i].value;
	return errnos[i].name;
}

int ublk_errno_by_name(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (strcmp(errnos[i].name, name) == 0)
			return errnos[i].value;
	return 0;
}

static const char *const op_names[] = { "read", "write", "flush", "discard", "write_same", "write_zeroes" };

const char *ublk_op_name(unsigned op)
{
	return op < sizeof(op_names) / sizeof(op_names[0]) ? op_names[op] : "unknown";
}
