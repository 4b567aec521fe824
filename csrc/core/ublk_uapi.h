/*
 * The ublk UAPI, as the running kernel reads it.
 *
 * Written from the kernel's include/uapi/linux/ublk_cmd.h (newest mainline) because the distro copy
 * (Debian bookworm: 6.1) lacks the ioctl-encoded opcodes, most feature flags and the newer parameter
 * blocks. Every struct the kernel shares with us has a _Static_assert on its size and on the offset of
 * every field: a wrong layout fails the build instead of reaching the kernel as -EINVAL.
 *
 * Do not include <linux/ublk_cmd.h> next to this file.
 */
#ifndef LUA_UBLK_UAPI_H
#define LUA_UBLK_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>
#include <stddef.h>

#ifdef USER_BLK_DRV_CMD_INC_H
#error "ublk_uapi.h replaces <linux/ublk_cmd.h>: include only one of them"
#endif

/* ---- control commands: legacy numbers (the ioctl "nr" of the encoded ones) ---- */
#define UBLK_CMD_GET_QUEUE_AFFINITY 0x01
#define UBLK_CMD_GET_DEV_INFO 0x02
#define UBLK_CMD_ADD_DEV 0x04
#define UBLK_CMD_DEL_DEV 0x05
#define UBLK_CMD_START_DEV 0x06
#define UBLK_CMD_STOP_DEV 0x07
#define UBLK_CMD_SET_PARAMS 0x08
#define UBLK_CMD_GET_PARAMS 0x09
#define UBLK_CMD_START_USER_RECOVERY 0x10
#define UBLK_CMD_END_USER_RECOVERY 0x11
#define UBLK_CMD_GET_DEV_INFO2 0x12
/* newer commands exist only ioctl-encoded */
#define UBLK_CMD_GET_FEATURES 0x13
#define UBLK_CMD_DEL_DEV_ASYNC 0x14
#define UBLK_CMD_UPDATE_SIZE 0x15
#define UBLK_CMD_QUIESCE_DEV 0x16
#define UBLK_CMD_TRY_STOP_DEV 0x17
#define UBLK_CMD_REG_BUF 0x18
#define UBLK_CMD_UNREG_BUF 0x19

/* ---- I/O commands (on /dev/ublkcN) ---- */
#define UBLK_IO_FETCH_REQ 0x20
#define UBLK_IO_COMMIT_AND_FETCH_REQ 0x21
#define UBLK_IO_NEED_GET_DATA 0x22
#define UBLK_IO_REGISTER_IO_BUF 0x23
#define UBLK_IO_UNREGISTER_IO_BUF 0x24
#define UBLK_IO_PREP_IO_CMDS 0x25
#define UBLK_IO_COMMIT_IO_CMDS 0x26
#define UBLK_IO_FETCH_IO_CMDS 0x27

#define UBLK_IO_RES_OK 0
#define UBLK_IO_RES_NEED_GET_DATA 1
#define UBLK_IO_RES_ABORT (-19) /* -ENODEV: the device is going away, the tag is done */

#define UBLKSRV_CMD_BUF_OFFSET 0
#define UBLKSRV_IO_BUF_OFFSET 0x80000000

#define UBLK_FEATURES_LEN 8
#define UBLK_MAX_QUEUE_DEPTH 4096
#define UBLK_IO_BUF_BITS 25 /* one I/O buffer is at most 32 MiB */
#define UBLK_TAG_BITS 16
#define UBLK_QID_BITS 12
#define UBLK_MAX_NR_QUEUES (1U << UBLK_QID_BITS)
#define UBLK_MIN_SEGMENT_SIZE 4096

/* ---- device flags (ublksrv_ctrl_dev_info.flags; GET_FEATURES mask) ---- */
#define UBLK_F_SUPPORT_ZERO_COPY (1ULL << 0)
#define UBLK_F_URING_CMD_COMP_IN_TASK (1ULL << 1)
#define UBLK_F_NEED_GET_DATA (1ULL << 2)
#define UBLK_F_USER_RECOVERY (1ULL << 3)
#define UBLK_F_USER_RECOVERY_REISSUE (1ULL << 4)
#define UBLK_F_UNPRIVILEGED_DEV (1ULL << 5)
#define UBLK_F_CMD_IOCTL_ENCODE (1ULL << 6)
#define UBLK_F_USER_COPY (1ULL << 7)
#define UBLK_F_ZONED (1ULL << 8)
#define UBLK_F_USER_RECOVERY_FAIL_IO (1ULL << 9)
#define UBLK_F_UPDATE_SIZE (1ULL << 10)
#define UBLK_F_AUTO_BUF_REG (1ULL << 11)
#define UBLK_F_QUIESCE (1ULL << 12)
#define UBLK_F_PER_IO_DAEMON (1ULL << 13)
#define UBLK_F_BUF_REG_OFF_DAEMON (1ULL << 14)
#define UBLK_F_BATCH_IO (1ULL << 15)
#define UBLK_F_INTEGRITY (1ULL << 16)
#define UBLK_F_SAFE_STOP_DEV (1ULL << 17)
#define UBLK_F_NO_AUTO_PART_SCAN (1ULL << 18)
#define UBLK_F_SHMEM_ZC (1ULL << 19)

/* ---- device state (ublksrv_ctrl_dev_info.state) ---- */
#define UBLK_S_DEV_DEAD 0
#define UBLK_S_DEV_LIVE 1
#define UBLK_S_DEV_QUIESCED 2
#define UBLK_S_DEV_FAIL_IO 3

/* ---- request ops and flags (ublksrv_io_desc.op_flags) ---- */
#define UBLK_IO_OP_READ 0
#define UBLK_IO_OP_WRITE 1
#define UBLK_IO_OP_FLUSH 2
#define UBLK_IO_OP_DISCARD 3
#define UBLK_IO_OP_WRITE_SAME 4
#define UBLK_IO_OP_WRITE_ZEROES 5
#define UBLK_IO_F_FUA (1U << 13)
#define UBLK_IO_F_NOUNMAP (1U << 15)

/* sent in the 80-byte command area of a 128-byte SQE to /dev/ublk-control */
struct ublksrv_ctrl_cmd {
	__u32 dev_id;       /* the device; (u32)-1 asks ADD_DEV to pick one */
	__u16 queue_id;     /* (u16)-1 unless the command is about one queue */
	__u16 len;          /* bytes at addr */
	__u64 addr;         /* command buffer, in or out */
	__u64 data[1];      /* inline argument */
	__u16 dev_path_len; /* unprivileged devices: "/dev/ublkcN" precedes the buffer */
	__u16 pad;
	__u32 reserved;
};

struct ublksrv_ctrl_dev_info {
	__u16 nr_hw_queues;
	__u16 queue_depth;
	__u16 state;
	__u16 pad0;
	__u32 max_io_buf_bytes;
	__u32 dev_id;
	__s32 ublksrv_pid;
	__u32 pad1;
	__u64 flags;         /* UBLK_F_* */
	__u64 ublksrv_flags; /* the server's own, never read by the kernel */
	__u32 owner_uid;     /* set by the kernel */
	__u32 owner_gid;
	__u64 reserved1;
	__u64 reserved2;
};

struct ublksrv_io_desc {
	__u32 op_flags; /* op: bits 0-7, flags: 8-31 */
	__u32 nr_sectors;
	__u64 start_sector;
	__u64 addr;
};

/* the op is in bits 0-7; the flags (UBLK_IO_F_*) are tested against op_flags as a whole */
static inline __u8 ublksrv_get_op(const struct ublksrv_io_desc *iod)
{
	return (__u8)(iod->op_flags & 0xff);
}

struct ublksrv_io_cmd {
	__u16 q_id;
	__u16 tag;
	__s32 result;
	__u64 addr;
};

#define UBLK_ATTR_READ_ONLY (1 << 0)
#define UBLK_ATTR_ROTATIONAL (1 << 1)
#define UBLK_ATTR_VOLATILE_CACHE (1 << 2)
#define UBLK_ATTR_FUA (1 << 3)

struct ublk_param_basic {
	__u32 attrs;
	__u8 logical_bs_shift;
	__u8 physical_bs_shift;
	__u8 io_opt_shift;
	__u8 io_min_shift;
	__u32 max_sectors;
	__u32 chunk_sectors;
	__u64 dev_sectors;
	__u64 virt_boundary_mask;
};

struct ublk_param_discard {
	__u32 discard_alignment;
	__u32 discard_granularity;
	__u32 max_discard_sectors;
	__u32 max_write_zeroes_sectors;
	__u16 max_discard_segments;
	__u16 reserved0;
};

struct ublk_param_devt { /* read-only: filled by GET_PARAMS */
	__u32 char_major;
	__u32 char_minor;
	__u32 disk_major;
	__u32 disk_minor;
};

struct ublk_param_zoned {
	__u32 max_open_zones;
	__u32 max_active_zones;
	__u32 max_zone_append_sectors;
	__u8 reserved[20];
};

struct ublk_param_dma_align {
	__u32 alignment;
	__u8 pad[4];
};

struct ublk_param_segment {
	__u64 seg_boundary_mask;
	__u32 max_segment_size;
	__u16 max_segments;
	__u8 pad[2];
};

struct ublk_param_integrity {
	__u32 flags;
	__u16 max_integrity_segments;
	__u8 interval_exp;
	__u8 metadata_size;
	__u8 pi_offset;
	__u8 csum_type;
	__u8 tag_size;
	__u8 pad[5];
};

#define UBLK_PARAM_TYPE_BASIC (1 << 0)
#define UBLK_PARAM_TYPE_DISCARD (1 << 1)
#define UBLK_PARAM_TYPE_DEVT (1 << 2)
#define UBLK_PARAM_TYPE_ZONED (1 << 3)
#define UBLK_PARAM_TYPE_DMA_ALIGN (1 << 4)
#define UBLK_PARAM_TYPE_SEGMENT (1 << 5)
#define UBLK_PARAM_TYPE_INTEGRITY (1 << 6)

struct ublk_params {
	__u32 len;   /* bytes of this struct we send; the kernel may lower it */
	__u32 types; /* UBLK_PARAM_TYPE_* present */
	struct ublk_param_basic basic;
	struct ublk_param_discard discard;
	struct ublk_param_devt devt;
	struct ublk_param_zoned zoned;
	struct ublk_param_dma_align dma;
	struct ublk_param_segment seg;
	struct ublk_param_integrity integrity;
};

/* ---- layout checks: size of every struct, offset of every field ---- */
#define UBLK_ASSERT_OFF(type, field, off) \
	_Static_assert(offsetof(struct type, field) == (off), #type "." #field " must be at offset " #off)
#define UBLK_ASSERT_SIZE(type, size) \
	_Static_assert(sizeof(struct type) == (size), "sizeof(struct " #type ") must be " #size)

UBLK_ASSERT_SIZE(ublksrv_ctrl_cmd, 32);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, dev_id, 0);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, queue_id, 4);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, len, 6);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, addr, 8);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, data, 16);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, dev_path_len, 24);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, pad, 26);
UBLK_ASSERT_OFF(ublksrv_ctrl_cmd, reserved, 28);

UBLK_ASSERT_SIZE(ublksrv_ctrl_dev_info, 64);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, nr_hw_queues, 0);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, queue_depth, 2);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, state, 4);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, pad0, 6);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, max_io_buf_bytes, 8);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, dev_id, 12);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, ublksrv_pid, 16);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, pad1, 20);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, flags, 24);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, ublksrv_flags, 32);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, owner_uid, 40);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, owner_gid, 44);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, reserved1, 48);
UBLK_ASSERT_OFF(ublksrv_ctrl_dev_info, reserved2, 56);

UBLK_ASSERT_SIZE(ublksrv_io_desc, 24);
UBLK_ASSERT_OFF(ublksrv_io_desc, op_flags, 0);
UBLK_ASSERT_OFF(ublksrv_io_desc, nr_sectors, 4);
UBLK_ASSERT_OFF(ublksrv_io_desc, start_sector, 8);
UBLK_ASSERT_OFF(ublksrv_io_desc, addr, 16);

UBLK_ASSERT_SIZE(ublksrv_io_cmd, 16);
UBLK_ASSERT_OFF(ublksrv_io_cmd, q_id, 0);
UBLK_ASSERT_OFF(ublksrv_io_cmd, tag, 2);
UBLK_ASSERT_OFF(ublksrv_io_cmd, result, 4);
UBLK_ASSERT_OFF(ublksrv_io_cmd, addr, 8);

UBLK_ASSERT_SIZE(ublk_param_basic, 32);
UBLK_ASSERT_OFF(ublk_param_basic, attrs, 0);
UBLK_ASSERT_OFF(ublk_param_basic, logical_bs_shift, 4);
UBLK_ASSERT_OFF(ublk_param_basic, physical_bs_shift, 5);
UBLK_ASSERT_OFF(ublk_param_basic, io_opt_shift, 6);
UBLK_ASSERT_OFF(ublk_param_basic, io_min_shift, 7);
UBLK_ASSERT_OFF(ublk_param_basic, max_sectors, 8);
UBLK_ASSERT_OFF(ublk_param_basic, chunk_sectors, 12);
UBLK_ASSERT_OFF(ublk_param_basic, dev_sectors, 16);
UBLK_ASSERT_OFF(ublk_param_basic, virt_boundary_mask, 24);

UBLK_ASSERT_SIZE(ublk_param_discard, 20);
UBLK_ASSERT_OFF(ublk_param_discard, discard_alignment, 0);
UBLK_ASSERT_OFF(ublk_param_discard, discard_granularity, 4);
UBLK_ASSERT_OFF(ublk_param_discard, max_discard_sectors, 8);
UBLK_ASSERT_OFF(ublk_param_discard, max_write_zeroes_sectors, 12);
UBLK_ASSERT_OFF(ublk_param_discard, max_discard_segments, 16);
UBLK_ASSERT_OFF(ublk_param_discard, reserved0, 18);

UBLK_ASSERT_SIZE(ublk_param_devt, 16);
UBLK_ASSERT_OFF(ublk_param_devt, char_major, 0);
UBLK_ASSERT_OFF(ublk_param_devt, char_minor, 4);
UBLK_ASSERT_OFF(ublk_param_devt, disk_major, 8);
UBLK_ASSERT_OFF(ublk_param_devt, disk_minor, 12);

UBLK_ASSERT_SIZE(ublk_param_zoned, 32);
UBLK_ASSERT_OFF(ublk_param_zoned, max_open_zones, 0);
UBLK_ASSERT_OFF(ublk_param_zoned, max_active_zones, 4);
UBLK_ASSERT_OFF(ublk_param_zoned, max_zone_append_sectors, 8);
UBLK_ASSERT_OFF(ublk_param_zoned, reserved, 12);

UBLK_ASSERT_SIZE(ublk_param_dma_align, 8);
UBLK_ASSERT_OFF(ublk_param_dma_align, alignment, 0);
UBLK_ASSERT_OFF(ublk_param_dma_align, pad, 4);

UBLK_ASSERT_SIZE(ublk_param_segment, 16);
UBLK_ASSERT_OFF(ublk_param_segment, seg_boundary_mask, 0);
UBLK_ASSERT_OFF(ublk_param_segment, max_segment_size, 8);
UBLK_ASSERT_OFF(ublk_param_segment, max_segments, 12);
UBLK_ASSERT_OFF(ublk_param_segment, pad, 14);

UBLK_ASSERT_SIZE(ublk_param_integrity, 16);
UBLK_ASSERT_OFF(ublk_param_integrity, flags, 0);
UBLK_ASSERT_OFF(ublk_param_integrity, max_integrity_segments, 4);
UBLK_ASSERT_OFF(ublk_param_integrity, interval_exp, 6);
UBLK_ASSERT_OFF(ublk_param_integrity, metadata_size, 7);
UBLK_ASSERT_OFF(ublk_param_integrity, pi_offset, 8);
UBLK_ASSERT_OFF(ublk_param_integrity, csum_type, 9);
UBLK_ASSERT_OFF(ublk_param_integrity, tag_size, 10);
UBLK_ASSERT_OFF(ublk_param_integrity, pad, 11);

UBLK_ASSERT_SIZE(ublk_params, 152);
UBLK_ASSERT_OFF(ublk_params, len, 0);
UBLK_ASSERT_OFF(ublk_params, types, 4);
UBLK_ASSERT_OFF(ublk_params, basic, 8);
UBLK_ASSERT_OFF(ublk_params, discard, 40);
UBLK_ASSERT_OFF(ublk_params, devt, 60);
UBLK_ASSERT_OFF(ublk_params, zoned, 76);
UBLK_ASSERT_OFF(ublk_params, dma, 108);
UBLK_ASSERT_OFF(ublk_params, seg, 120);
UBLK_ASSERT_OFF(ublk_params, integrity, 136);

/* ioctl-encoded command numbers: _IOR/_IOWR('u', nr, struct ublksrv_ctrl_cmd or ublksrv_io_cmd) */
#define UBLK_U_CMD(dir, nr) _IOC((dir), 'u', (nr), sizeof(struct ublksrv_ctrl_cmd))
#define UBLK_U_IO(nr) _IOWR('u', (nr), struct ublksrv_io_cmd)

_Static_assert(UBLK_U_CMD(_IOC_READ | _IOC_WRITE, UBLK_CMD_ADD_DEV) == 0xc0207504,
	       "UBLK_U_CMD_ADD_DEV must be 0xc0207504");
_Static_assert(UBLK_U_CMD(_IOC_READ, UBLK_CMD_GET_FEATURES) == 0x80207513,
	       "UBLK_U_CMD_GET_FEATURES must be 0x80207513");
_Static_assert(UBLK_U_IO(UBLK_IO_FETCH_REQ) == 0xc0107520, "UBLK_U_IO_FETCH_REQ must be 0xc0107520");

#endif
