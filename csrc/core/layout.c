/*
 * Field tables built with offsetof/sizeof from the structs in ublk_uapi.h and liburing's io_uring.h,
 * so the offsets `ublk decode` prints are the ones the compiler (and the kernel) use.
 */
#include "layout.h"

#include <liburing.h>

#include "ublk_uapi.h"

#define FIELD(type, member, sgn)                                                      \
	{ #member, offsetof(struct type, member), sizeof(((struct type *)0)->member), sgn }
#define LAYOUT(kind, type, table) \
	{ kind, "struct " #type, sizeof(struct type), table, sizeof(table) / sizeof(table[0]) }

static const struct ublk_field ctrl_cmd_fields[] = {
	FIELD(ublksrv_ctrl_cmd, dev_id, 0),       FIELD(ublksrv_ctrl_cmd, queue_id, 0),
	FIELD(ublksrv_ctrl_cmd, len, 0),          FIELD(ublksrv_ctrl_cmd, addr, 0),
	{ "data", offsetof(struct ublksrv_ctrl_cmd, data), 8, 0 },
	FIELD(ublksrv_ctrl_cmd, dev_path_len, 0), FIELD(ublksrv_ctrl_cmd, pad, 0),
	FIELD(ublksrv_ctrl_cmd, reserved, 0),
};

static const struct ublk_field dev_info_fields[] = {
	FIELD(ublksrv_ctrl_dev_info, nr_hw_queues, 0),  FIELD(ublksrv_ctrl_dev_info, queue_depth, 0),
	FIELD(ublksrv_ctrl_dev_info, state, 0),         FIELD(ublksrv_ctrl_dev_info, pad0, 0),
	FIELD(ublksrv_ctrl_dev_info, max_io_buf_bytes, 0), FIELD(ublksrv_ctrl_dev_info, dev_id, 0),
	FIELD(ublksrv_ctrl_dev_info, ublksrv_pid, 1),   FIELD(ublksrv_ctrl_dev_info, pad1, 0),
	FIELD(ublksrv_ctrl_dev_info, flags, 0),         FIELD(ublksrv_ctrl_dev_info, ublksrv_flags, 0),
	FIELD(ublksrv_ctrl_dev_info, owner_uid, 0),     FIELD(ublksrv_ctrl_dev_info, owner_gid, 0),
	FIELD(ublksrv_ctrl_dev_info, reserved1, 0),     FIELD(ublksrv_ctrl_dev_info, reserved2, 0),
};

static const struct ublk_field params_fields[] = {
	FIELD(ublk_params, len, 0),
	FIELD(ublk_params, types, 0),
	FIELD(ublk_params, basic.attrs, 0),
	FIELD(ublk_params, basic.logical_bs_shift, 0),
	FIELD(ublk_params, basic.physical_bs_shift, 0),
	FIELD(ublk_params, basic.io_opt_shift, 0),
	FIELD(ublk_params, basic.io_min_shift, 0),
	FIELD(ublk_params, basic.max_sectors, 0),
	FIELD(ublk_params, basic.chunk_sectors, 0),
	FIELD(ublk_params, basic.dev_sectors, 0),
	FIELD(ublk_params, basic.virt_boundary_mask, 0),
	FIELD(ublk_params, discard.discard_alignment, 0),
	FIELD(ublk_params, discard.discard_granularity, 0),
	FIELD(ublk_params, discard.max_discard_sectors, 0),
	FIELD(ublk_params, discard.max_write_zeroes_sectors, 0),
	FIELD(ublk_params, discard.max_discard_segments, 0),
	FIELD(ublk_params, discard.reserved0, 0),
	FIELD(ublk_params, devt.char_major, 0),
	FIELD(ublk_params, devt.char_minor, 0),
	FIELD(ublk_params, devt.disk_major, 0),
	FIELD(ublk_params, devt.disk_minor, 0),
	FIELD(ublk_params, zoned.max_open_zones, 0),
	FIELD(ublk_params, zoned.max_active_zones, 0),
	FIELD(ublk_params, zoned.max_zone_append_sectors, 0),
	FIELD(ublk_params, zoned.reserved, 0),
	FIELD(ublk_params, dma.alignment, 0),
	FIELD(ublk_params, dma.pad, 0),
	FIELD(ublk_params, seg.seg_boundary_mask, 0),
	FIELD(ublk_params, seg.max_segment_size, 0),
	FIELD(ublk_params, seg.max_segments, 0),
	FIELD(ublk_params, seg.pad, 0),
	FIELD(ublk_params, integrity.flags, 0),
	FIELD(ublk_params, integrity.max_integrity_segments, 0),
	FIELD(ublk_params, integrity.interval_exp, 0),
	FIELD(ublk_params, integrity.metadata_size, 0),
	FIELD(ublk_params, integrity.pi_offset, 0),
	FIELD(ublk_params, integrity.csum_type, 0),
	FIELD(ublk_params, integrity.tag_size, 0),
	FIELD(ublk_params, integrity.pad, 0),
};

/* The 64-byte SQE as a URING_CMD reads it; cmd (the first 16 of its 80 bytes in an SQE128) at 48. */
static const struct ublk_field sqe_fields[] = {
	FIELD(io_uring_sqe, opcode, 0),   FIELD(io_uring_sqe, flags, 0),
	FIELD(io_uring_sqe, ioprio, 0),   FIELD(io_uring_sqe, fd, 1),
	FIELD(io_uring_sqe, cmd_op, 0),   FIELD(io_uring_sqe, __pad1, 0),
	FIELD(io_uring_sqe, addr, 0),     FIELD(io_uring_sqe, len, 0),
	FIELD(io_uring_sqe, uring_cmd_flags, 0), FIELD(io_uring_sqe, user_data, 0),
	FIELD(io_uring_sqe, buf_index, 0), FIELD(io_uring_sqe, personality, 0),
	FIELD(io_uring_sqe, splice_fd_in, 1), FIELD(io_uring_sqe, addr3, 0),
	FIELD(io_uring_sqe, __pad2, 0),
};

static const struct ublk_field io_desc_fields[] = {
	FIELD(ublksrv_io_desc, op_flags, 0), FIELD(ublksrv_io_desc, nr_sectors, 0),
	FIELD(ublksrv_io_desc, start_sector, 0), FIELD(ublksrv_io_desc, addr, 0),
};

static const struct ublk_field io_cmd_fields[] = {
	FIELD(ublksrv_io_cmd, q_id, 0), FIELD(ublksrv_io_cmd, tag, 0),
	FIELD(ublksrv_io_cmd, result, 1), FIELD(ublksrv_io_cmd, addr, 0),
};

_Static_assert(sizeof(struct io_uring_sqe) == 64, "io_uring_sqe must be 64 bytes");
_Static_assert(offsetof(struct io_uring_sqe, cmd_op) == 8, "sqe.cmd_op must be at offset 8");
_Static_assert(offsetof(struct io_uring_sqe, cmd) == 48, "sqe.cmd must be at offset 48");
_Static_assert(IORING_OP_URING_CMD == 46, "IORING_OP_URING_CMD must be 46");

static const struct ublk_layout layouts[] = {
	LAYOUT("ctrl_cmd", ublksrv_ctrl_cmd, ctrl_cmd_fields),
	LAYOUT("dev_info", ublksrv_ctrl_dev_info, dev_info_fields),
	LAYOUT("params", ublk_params, params_fields),
	LAYOUT("sqe", io_uring_sqe, sqe_fields),
	LAYOUT("io_desc", ublksrv_io_desc, io_desc_fields),
	LAYOUT("io_cmd", ublksrv_io_cmd, io_cmd_fields),
};

const struct ublk_layout *ublk_layout_at(size_t i)
{
	return i < sizeof(layouts) / sizeof(layouts[0]) ? &layouts[i] : NULL;
}

const struct ublk_layout *ublk_layout_find(const char *kind)
{
	const struct ublk_layout *l;
	size_t i;

	for (i = 0; (l = ublk_layout_at(i)) != NULL; i++) {
		const char *a = l->kind, *b = kind;
		while (*a && *a == *b)
			a++, b++;
		if (*a == *b)
			return l;
	}
	return NULL;
}
