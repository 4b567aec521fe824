/*
 * A target serves the requests of a device: one ops table per target (targets/null.c, ram.c, file.c),
 * found by name, in the manner of the kernel selftests' kublk.
 *
 * The queue's daemon (its queue thread, or the Lua thread for Lua-owned rings) calls queue_io for
 * each request the kernel hands it. The target either answers at once (returns bytes done, 0, or
 * -errno) or returns UBLK_IO_QUEUED after putting SQEs on the queue's own ring (user_data from
 * ublk_tgt_user_data), answering later from io_done with ublk_queue_complete(). Every op but the
 * name is optional (NULL): no init or deinit, nothing to acquire; no queue_io, every request that
 * reaches the target is answered EOPNOTSUPP; io_done is needed only where queue_io queues SQEs.
 */
#ifndef LUA_UBLK_TARGET_H
#define LUA_UBLK_TARGET_H

#include <liburing.h>
#include <stdint.h>

#include "ublk_uapi.h"

struct ublk_queue;
struct ublk_target;

/* the backing file's slot among each queue ring's fixed files */
#define UBLK_FIXED_BACKING 1

/* queue_io's answer when the request will be completed later */
#define UBLK_IO_QUEUED 1

/* What the Lua side resolved for the target (lua/ublk/targets.lua), read by init. */
struct ublk_target_config {
	const char *name;
	const char *path;   /* file: the backing file or block device */
	uint64_t size;      /* device size in bytes */
	uint64_t offset;    /* file: where the device starts in the backing file */
	unsigned block_size;
	int direct;         /* file: O_DIRECT */
	int read_only;
	int nr_queues;
	int depth;
};

struct ublk_target_ops {
	const char *name;
	/* Optional: acquire what the target needs (backing file, memory): 0 or -errno, with *why set. */
	int (*init)(struct ublk_target *t, const struct ublk_target_config *cfg, const char **why);
	void (*deinit)(struct ublk_target *t); /* optional */
	/* Optional: handle one request: bytes, 0 or -errno now, or UBLK_IO_QUEUED. */
	int (*queue_io)(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf);
	/* A completion of one of the target's own SQEs (needed where queue_io returns UBLK_IO_QUEUED). */
	void (*io_done)(struct ublk_queue *q, int tag, const struct io_uring_cqe *cqe);
	/* How many SQEs one request may need at once (sizes the ring). */
	int sqes_per_io;
	/* Optional: bytes of memory the target holds for data (ram). */
	unsigned long long (*memory)(const struct ublk_target *t);
};

struct ublk_target {
	const struct ublk_target_ops *ops;
	uint64_t size;
	unsigned block_size;
	int read_only;
	int fd;       /* the backing fd, or -1; fixed file 1 on every queue ring */
	int backing_is_blockdev;
	void *data;   /* the target's own */
};

const struct ublk_target_ops *ublk_target_find(const char *name);

extern const struct ublk_target_ops ublk_target_null;
extern const struct ublk_target_ops ublk_target_ram;
extern const struct ublk_target_ops ublk_target_file;
extern const struct ublk_target_ops ublk_target_lua;

#endif
