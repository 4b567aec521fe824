/* Field tables of the kernel-shared structs: one source for packing, unpacking and `ublk decode`. */
#ifndef LUA_UBLK_LAYOUT_H
#define LUA_UBLK_LAYOUT_H

#include <stddef.h>

struct ublk_field {
	const char *name; /* as in the kernel header; nested as "basic.attrs" */
	size_t offset;
	size_t size;      /* 1, 2, 4, 8: an integer; anything else: bytes */
	int is_signed;
};

struct ublk_layout {
	const char *kind; /* "ctrl_cmd", "dev_info", "params", "sqe", "io_desc", "io_cmd" */
	const char *ctype;
	size_t size;
	const struct ublk_field *fields;
	size_t nfields;
};

const struct ublk_layout *ublk_layout_find(const char *kind);
const struct ublk_layout *ublk_layout_at(size_t i); /* NULL past the end */

#endif
