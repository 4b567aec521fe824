/* The control ring: one SQE128/CQE32 io_uring on /dev/ublk-control, shared by the devices of a Lua state. */
#ifndef LUA_UBLK_CTRL_H
#define LUA_UBLK_CTRL_H

#include <liburing.h>

#include "ublk_uapi.h"

/* An answer reaped for another command than the one waiting (see ublk_ctrl_reap). */
struct ublk_ctrl_answer {
	__u64 tag;
	int res;
};

/* Commands in the kernel or answered but not yet reaped by their sender, at most: nested commands are
 * few (a handler or the collector sending one while another waits), and the bound keeps the stash
 * of answers for others a fixed array, so reaping never allocates while a command is out. */
#define UBLK_CTRL_DEPTH 8

struct ublk_ctrl {
	int fd;
	int refs;   /* the Lua handle and every device opened through it */
	int legacy; /* the kernel lacks UBLK_F_CMD_IOCTL_ENCODE: send the legacy opcodes */
	struct io_uring ring;
	__u64 last_tag;  /* each command's user_data: commands may nest (below) */
	unsigned inflight; /* submitted, answer not reaped yet */
	unsigned nstash;   /* reaped for a command still waiting: inflight + nstash <= UBLK_CTRL_DEPTH */
	struct ublk_ctrl_answer stash[UBLK_CTRL_DEPTH];
};

int ublk_ctrl_open(struct ublk_ctrl **out, const char *path); /* 0 or -errno */
void ublk_ctrl_unref(struct ublk_ctrl *c);

/* Fill a 128-byte SQE image for one command; cmd_op is the legacy number or the ioctl-encoded one. */
void ublk_ctrl_prep(unsigned char sqe[128], int fd, __u32 cmd_op, const struct ublksrv_ctrl_cmd *header);

/*
 * Submit a prepared SQE image and wait for its completion: the CQE's res (>= 0 or -errno), or the
 * -errno of the ring itself (then *from_ring is set, when given).
 */
int ublk_ctrl_run(struct ublk_ctrl *c, const unsigned char sqe[128], int *from_ring);

/* The two halves of ublk_ctrl_run, for a caller with other work while the kernel works (the Lua
 * thread serving its own device's requests during START_DEV and STOP_DEV): submit (0 or -errno of
 * the ring, or -EBUSY with UBLK_CTRL_DEPTH commands out; *tag names the command), then reap: 1 with *res set, 0 when not there yet (wait = 0),
 * or -errno of the ring. The ring's fd polls readable once an answer is there.
 * Commands may nest: while one waits, a handler (or the collector) may send another on the same
 * ring. Each reaps its own answer by tag; one for the other is kept for it. */
int ublk_ctrl_submit(struct ublk_ctrl *c, const unsigned char sqe[128], __u64 *tag);
int ublk_ctrl_reap(struct ublk_ctrl *c, __u64 tag, int wait, int *res);

/* A bufferless command about one device (STOP_DEV, DEL_DEV...) for callers that need no trace: the
 * legacy number or the ioctl encoding (direction dir), as the ring was told. The CQE's res. While
 * the kernel works, idle(arg) runs every millisecond when given (a device whose queue rings only
 * this thread reaps must go on answering them, or a STOP_DEV waiting for them never ends). */
int ublk_ctrl_device_command(struct ublk_ctrl *c, unsigned nr, unsigned dir, __u32 dev_id,
			     void (*idle)(void *), void *arg);

/* Which delete a device gets: DEL_DEV_ASYNC for one that was served (a synchronous DEL_DEV waits
 * until every opener of /dev/ublkbN, fio or a mount, lets go), DEL_DEV otherwise or with legacy
 * opcodes (DEL_DEV_ASYNC has no legacy number). The command number; the one place this is chosen. */
unsigned ublk_ctrl_delete_command(const struct ublk_ctrl *c, int served);
/* That delete, sent without a trace (the collector's path): the CQE's res. */
int ublk_ctrl_delete_device(struct ublk_ctrl *c, __u32 dev_id, int served);

#endif
