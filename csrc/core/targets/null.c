/*
 * null: every request succeeds at once and reads return zeros; the floor of our own overhead.
 * A read zeroes its buffer only where writes on the same tag left data.
 */
#include <errno.h>
#include <string.h>

#include "../queue.h"
#include "../target.h"

static int null_queue_io(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf)
{
	struct ublk_io *io = &q->ios[tag];
	unsigned bytes = iod->nr_sectors << 9;

	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
		if (io->flags & IO_DIRTY) {
			/* io->result: how far writes on this tag have dirtied the buffer */
			memset(buf, 0, (size_t)io->result);
			io->flags &= ~IO_DIRTY;
			io->result = 0;
		}
		return (int)bytes;
	case UBLK_IO_OP_WRITE:
		io->flags |= IO_DIRTY;
		if ((int)bytes > io->result)
			io->result = (int)bytes;
		return (int)bytes;
	case UBLK_IO_OP_FLUSH:
	case UBLK_IO_OP_DISCARD:
	case UBLK_IO_OP_WRITE_ZEROES:
		return 0;
	default:
		return -EOPNOTSUPP;
	}
}

const struct ublk_target_ops ublk_target_null = {
	.name = "null",
	.queue_io = null_queue_io,
	.sqes_per_io = 0,
};
