/*
 * file: a regular file or a block device, read and written asynchronously on the queue's own ring
 * (fixed file UBLK_FIXED_BACKING), O_DIRECT when asked. FLUSH is fdatasync, a FUA write is written
 * with RWF_DSYNC, DISCARD punches a hole, WRITE_ZEROES zeroes the range (a hole where unmapping is
 * allowed), each falling back to the other where the backing store lacks one.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../queue.h"
#include "../target.h"

/* what each target SQE is, in the user_data's target byte */
enum { FILE_RW = 1, FILE_FLUSH, FILE_PUNCH, FILE_ZERO_RANGE };

struct file_backing {
	uint64_t offset; /* where the device starts in the backing file */
};

static int file_init(struct ublk_target *t, const struct ublk_target_config *cfg, const char **why)
{
	struct stat st;
	int flags = (cfg->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (cfg->direct ? O_DIRECT : 0);
	int fd;

	fd = open(cfg->path, flags);
	if (fd < 0) {
		*why = "opening the backing file";
		return -errno;
	}
	if (fstat(fd, &st) < 0) {
		int e = errno; /* before close, which may change it */

		*why = "fstat on the backing file";
		close(fd);
		return -e;
	}
	t->fd = fd;
	t->backing_is_blockdev = S_ISBLK(st.st_mode);
	t->data = (void *)(uintptr_t)cfg->offset;
	return 0;
}

static uint64_t backing_offset(const struct ublk_queue *q)
{
	return (uint64_t)(uintptr_t)q->tgt->data;
}

static void prep_rw(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf)
{
	struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);
	unsigned done = (unsigned)q->ios[tag].result;
	unsigned bytes = (iod->nr_sectors << 9) - done;
	uint64_t off = backing_offset(q) + (iod->start_sector << 9) + done;
	unsigned char *p = (unsigned char *)buf + done;

	if (ublksrv_get_op(iod) == UBLK_IO_OP_READ) {
		io_uring_prep_read(sqe, UBLK_FIXED_BACKING, p, bytes, off);
	} else {
		io_uring_prep_write(sqe, UBLK_FIXED_BACKING, p, bytes, off);
		if (iod->op_flags & UBLK_IO_F_FUA)
			sqe->rw_flags = RWF_DSYNC;
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ublk_tgt_user_data(tag, FILE_RW));
}

static void prep_fallocate(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, unsigned what)
{
	struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);
	int mode = FALLOC_FL_KEEP_SIZE | (what == FILE_PUNCH ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);

	io_uring_prep_fallocate(sqe, UBLK_FIXED_BACKING, mode, backing_offset(q) + (iod->start_sector << 9),
				(off_t)iod->nr_sectors << 9);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, ublk_tgt_user_data(tag, what));
}

static void submitted(struct ublk_queue *q, int tag)
{
	q->tgt_inflight++;
	q->ios[tag].tgt_inflight++;
}

static int file_queue_io(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf)
{
	struct io_uring_sqe *sqe;

	q->ios[tag].result = 0;
	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
	case UBLK_IO_OP_WRITE:
		prep_rw(q, tag, iod, buf);
		break;
	case UBLK_IO_OP_FLUSH:
		sqe = ublk_queue_get_sqe(q);
		io_uring_prep_fsync(sqe, UBLK_FIXED_BACKING, IORING_FSYNC_DATASYNC);
		sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(sqe, ublk_tgt_user_data(tag, FILE_FLUSH));
		break;
	case UBLK_IO_OP_DISCARD:
		prep_fallocate(q, tag, iod, FILE_PUNCH);
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		/* NOUNMAP: the blocks must stay allocated; a block device zeroes in place either way */
		prep_fallocate(q, tag, iod,
			       (iod->op_flags & UBLK_IO_F_NOUNMAP) || q->tgt->backing_is_blockdev
				       ? FILE_ZERO_RANGE : FILE_PUNCH);
		break;
	default:
		return -EOPNOTSUPP;
	}
	submitted(q, tag);
	return UBLK_IO_QUEUED;
}

static void file_io_done(struct ublk_queue *q, int tag, const struct io_uring_cqe *cqe)
{
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	struct ublk_io *io = &q->ios[tag];
	unsigned op = ublksrv_get_op(iod);
	unsigned total = iod->nr_sectors << 9;
	int res = cqe->res;

	switch (UD_TGT_DATA(cqe->user_data)) {
	case FILE_RW:
		if (res > 0 && (unsigned)(io->result + res) < total) {
			/* short transfer: go on from where it stopped */
			io->result += res;
			prep_rw(q, tag, iod, ublk_queue_buf(q, tag));
			submitted(q, tag);
			return;
		}
		if (res == 0 && op == UBLK_IO_OP_READ) {
			/* past the end of a shorter backing file: the rest reads as zeros */
			memset((unsigned char *)ublk_queue_buf(q, tag) + io->result, 0, total - (unsigned)io->result);
			res = (int)(total - (unsigned)io->result);
		} else if (res == 0) {
			res = -EIO;
		}
		ublk_queue_complete(q, tag, res < 0 ? res : (int)total);
		return;
	case FILE_PUNCH:
	case FILE_ZERO_RANGE:
		if (res == -EOPNOTSUPP && op == UBLK_IO_OP_WRITE_ZEROES && io->result == 0) {
			/* the backing store has only the other kind (tmpfs: holes, no ZERO_RANGE) */
			io->result = 1;
			prep_fallocate(q, tag, iod, UD_TGT_DATA(cqe->user_data) == FILE_PUNCH ? FILE_ZERO_RANGE : FILE_PUNCH);
			submitted(q, tag);
			return;
		}
		if (res == -EOPNOTSUPP && op == UBLK_IO_OP_DISCARD)
			res = 0; /* a discard is a hint: the data may stay */
		ublk_queue_complete(q, tag, res < 0 ? res : 0);
		return;
	default: /* FILE_FLUSH */
		ublk_queue_complete(q, tag, res < 0 ? res : 0);
		return;
	}
}

const struct ublk_target_ops ublk_target_file = {
	.name = "file",
	.init = file_init,
	.queue_io = file_queue_io,
	.io_done = file_io_done,
	.sqes_per_io = 1,
};
