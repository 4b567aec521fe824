/*
 * A queue, whoever its daemon is: FETCH_REQ for every tag, then for each request the kernel hands
 * over, the target's answer goes back in a COMMIT_AND_FETCH_REQ, which also asks for the tag's next
 * request. A request whose op is hooked is set aside for Lua instead (to_lua).
 */
#include "queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "target.h"

_Static_assert(UBLK_IO_RES_ABORT == -ENODEV, "UBLK_IO_RES_ABORT is -ENODEV");

/* fixed-file slots of every queue ring */
#define FIXED_CDEV 0

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

int ublk_queue_new(struct ublk_queue **out, const struct ublk_queue_config *cfg)
{
	struct ublk_queue *q;
	size_t pg = page_size();
	off_t off;
	int ret;

	q = calloc(1, sizeof(*q) + (size_t)cfg->depth * sizeof(q->ios[0]));
	if (!q)
		return -ENOMEM;
	q->tgt = cfg->tgt;
	q->handoff = cfg->handoff;
	q->tally = cfg->tally;
	q->q_id = cfg->q_id;
	q->depth = cfg->depth;
	q->buf_size = cfg->buf_size;
	q->cdev_fd = cfg->cdev_fd;
	q->legacy = cfg->legacy;
	q->door = -1;
	q->descs = MAP_FAILED;
	q->bufs = MAP_FAILED;
	atomic_init(&q->stop, 0);
	ret = pthread_mutex_init(&q->remote_lock, NULL);
	if (ret) {
		free(q);
		return -ret;
	}

	/* The kernel lays the queues' descriptor arrays out at a fixed stride (room for the deepest
	 * queue) and wants each mapped read-only, exactly its own size. */
	off = UBLKSRV_CMD_BUF_OFFSET +
	      (off_t)q->q_id * (off_t)round_up(UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc), pg);
	q->descs_len = round_up((size_t)q->depth * sizeof(struct ublksrv_io_desc), pg);
	q->descs = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, q->cdev_fd, off);
	if (q->descs == MAP_FAILED) {
		ret = -errno;
		goto fail;
	}
	/* Buffers: page aligned, reserved but not committed until a request touches them. */
	q->bufs = mmap(NULL, (size_t)q->depth * q->buf_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (q->bufs == MAP_FAILED) {
		ret = -errno;
		goto fail;
	}
	q->door = eventfd(0, EFD_CLOEXEC);
	if (q->door < 0) {
		ret = -errno;
		goto fail;
	}
	q->remote = calloc((size_t)q->depth, sizeof(q->remote[0]));
	q->to_lua = calloc((size_t)q->depth, sizeof(q->to_lua[0]));
	if (!q->remote || !q->to_lua) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = q;
	return 0;

fail:
	ublk_queue_free(q);
	return ret;
}

void ublk_queue_free(struct ublk_queue *q)
{
	if (!q)
		return;
	ublk_queue_exit(q);
	if (q->descs != MAP_FAILED)
		munmap(q->descs, q->descs_len);
	/* Target I/O still out when the ring went (a backing store that did not answer within the
	 * Lua-owned ring's wait, or a ring that failed): a buffered read may still be copied into
	 * these buffers by an io-wq worker, so they stay mapped rather than be reused by a later mmap. */
	if (q->bufs != MAP_FAILED && q->tgt_inflight == 0)
		munmap(q->bufs, (size_t)q->depth * q->buf_size);
	if (q->door >= 0)
		close(q->door);
	free(q->remote);
	free(q->to_lua);
	pthread_mutex_destroy(&q->remote_lock);
	free(q);
}

struct io_uring_sqe *ublk_queue_get_sqe(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		/* Cannot happen with the ring sized for depth * (1 + sqes_per_io) + 2 (the door's read
		 * and a knock), but a full SQ must not lose a request: push what is queued and take the
		 * freed slot. */
		io_uring_submit(&q->ring);
		sqe = io_uring_get_sqe(&q->ring);
	}
	return sqe;
}

/* FETCH_REQ or COMMIT_AND_FETCH_REQ for one tag. liburing 2.3 has no uring_cmd helper: the 16-byte
 * struct ublksrv_io_cmd goes in the SQE's command area, the opcode in cmd_op. */
static void queue_cmd(struct ublk_queue *q, int tag, unsigned nr, int result)
{
	struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);
	struct ublksrv_io_cmd *cmd;

	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, FIXED_CDEV, NULL, 0, 0);
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->cmd_op = q->legacy ? nr : UBLK_U_IO(nr);
	cmd = (struct ublksrv_io_cmd *)sqe->cmd;
	cmd->q_id = (__u16)q->q_id;
	cmd->tag = (__u16)tag;
	cmd->result = result;
	cmd->addr = (__u64)(uintptr_t)ublk_queue_buf(q, tag);
	io_uring_sqe_set_data64(sqe, (__u64)tag | ((__u64)UD_CMD << 16));
	q->ios[tag].flags |= IO_CMD_INFLIGHT;
	q->cmd_inflight++;
}

void ublk_queue_complete(struct ublk_queue *q, int tag, int result)
{
	QUEUE_STAT_ADD(q, requests, 1);
	if (result < 0)
		QUEUE_STAT_ADD(q, errors, 1);
	queue_cmd(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, result);
}

/* The target's turn: bytes/-errno now, or it queued SQEs and answers from io_done. A target
 * without queue_io (lua: every op it serves is hooked) answers what reaches it EOPNOTSUPP. */
static void serve_target(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod)
{
	const struct ublk_target_ops *ops = q->tgt->ops;
	int ret = ops->queue_io ? ops->queue_io(q, tag, iod, ublk_queue_buf(q, tag)) : -EOPNOTSUPP;

	if (ret != UBLK_IO_QUEUED)
		ublk_queue_complete(q, tag, ret);
}

void ublk_queue_answer(struct ublk_queue *q, const struct ublk_remote_done *d)
{
	q->lua_inflight--;
	if (d->pass)
		serve_target(q, d->tag, &q->descs[d->tag]);
	else
		ublk_queue_complete(q, d->tag, d->result);
}

void ublk_queue_stamp(struct ublk_handoff_req *reqs, int n)
{
	struct timespec now;
	uint64_t ns;
	int i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
	for (i = 0; i < n; i++)
		reqs[i].received_ns = ns;
}

void ublk_queue_refuse(struct ublk_queue *q, const struct ublk_handoff_req *reqs, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		q->lua_inflight--;
		ublk_queue_complete(q, reqs[i].tag, -EIO);
	}
}

/* READ_ONLY only makes the disk read-only to user space: in-kernel writers still reach us, and are
 * answered -EROFS here. */
static int is_write_to_read_only(const struct ublk_queue *q, unsigned op)
{
	return q->tgt->read_only &&
	       (op == UBLK_IO_OP_WRITE || op == UBLK_IO_OP_DISCARD || op == UBLK_IO_OP_WRITE_ZEROES);
}

/* A FETCH or COMMIT_AND_FETCH came back: 1 when it brought a request, 0 when the tag is done (ABORT:
 * the device is stopping; anything else is a command the kernel refused: the first is kept for the
 * owner, and the queue stops too). */
static int cmd_came_back(struct ublk_queue *q, int tag, int res)
{
	struct ublk_io *io = &q->ios[tag];

	io->flags &= ~IO_CMD_INFLIGHT;
	q->cmd_inflight--;
	if (res == UBLK_IO_RES_OK)
		return 1;
	if (res != UBLK_IO_RES_ABORT && !q->stats.cmd_error)
		QUEUE_STAT_SET(q, cmd_error, res);
	io->flags |= IO_ABORTED;
	q->kernel_stopping = 1;
	return 0;
}

static void serve(struct ublk_queue *q, int tag)
{
	struct ublksrv_io_desc iod = q->descs[tag]; /* one read of the shared descriptor */
	unsigned op = ublksrv_get_op(&iod);

	if (is_write_to_read_only(q, op)) {
		ublk_queue_complete(q, tag, -EROFS);
	} else if (ublk_handoff_hooks(q->handoff, op)) {
		struct ublk_handoff_req *r = &q->to_lua[q->nr_to_lua++];

		r->q_id = (uint16_t)q->q_id;
		r->tag = (uint16_t)tag;
		r->pad = 0;
		r->iod = iod;
		q->lua_inflight++;
	} else {
		serve_target(q, tag, &iod);
	}
}

unsigned ublk_queue_handle_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	__u64 ud = cqe->user_data;
	int tag = UD_TAG(ud);

	switch (UD_KIND(ud)) {
	case UD_CMD:
		if (cmd_came_back(q, tag, cqe->res))
			serve(q, tag);
		return 0;
	case UD_TGT:
		/* only a target that queued SQEs gets here, and such a target has io_done (target.h) */
		q->tgt_inflight--;
		q->ios[tag].tgt_inflight--;
		q->tgt->ops->io_done(q, tag, cqe);
		return 0;
	default:
		return UD_KIND(ud);
	}
}

/* The ring: SINGLE_ISSUER | DEFER_TASKRUN keeps completions from interrupting the thread (task work
 * runs when it waits), COOP_TASKRUN where DEFER is missing; the char device is a fixed file. */
static int ring_setup(struct ublk_queue *q, const char **why, int polled)
{
	const struct ublk_target *t = q->tgt;
	unsigned entries = (unsigned)q->depth * (1U + (unsigned)t->ops->sqes_per_io) + 2;
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int fds[2] = { q->cdev_fd, t->fd };
	unsigned i;
	int ret = -EINVAL;

	for (i = polled ? 2 : 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = tries[i];
		ret = io_uring_queue_init_params(entries, &q->ring, &p);
		if (ret != -EINVAL)
			break;
	}
	if (ret < 0) {
		*why = "io_uring_queue_init for a queue";
		return ret;
	}
	q->ring_ready = 1;
	ret = io_uring_register_files(&q->ring, fds, t->fd >= 0 ? 2 : 1);
	if (ret < 0) {
		*why = "io_uring_register_files (the char device and the backing file)";
		return ret;
	}
	io_uring_register_ring_fd(&q->ring); /* saves an fget per enter where the kernel has it */
	return 0;
}

/* After the first submit, a FETCH_REQ the kernel refused is already in the CQ ring: report it now,
 * since START_DEV would wait forever for a tag that was never fetched. */
static int fetch_failed(struct ublk_queue *q)
{
	struct io_uring_cqe *cqe;
	unsigned head;

	io_uring_for_each_cqe(&q->ring, head, cqe) {
		if (UD_KIND(cqe->user_data) == UD_CMD && cqe->res < 0)
			return cqe->res;
	}
	return 0;
}

int ublk_queue_start(struct ublk_queue *q, int polled, const char **why)
{
	int tag, ret = ring_setup(q, why, polled);

	if (ret < 0) {
		ublk_queue_exit(q);
		return ret;
	}
	for (tag = 0; tag < q->depth; tag++)
		queue_cmd(q, tag, UBLK_IO_FETCH_REQ, -1);
	ret = io_uring_submit(&q->ring);
	if (ret >= 0)
		ret = fetch_failed(q);
	if (ret < 0) {
		*why = "FETCH_REQ";
		ublk_queue_exit(q);
		return ret;
	}
	return 0;
}

void ublk_queue_exit(struct ublk_queue *q)
{
	if (q->ring_ready) {
		io_uring_queue_exit(&q->ring);
		q->ring_ready = 0;
	}
}

void ublk_queue_report_ready(struct ublk_queue *q, int err, const char *why)
{
	struct ublk_queue_tally *t = q->tally;

	pthread_mutex_lock(&t->lock);
	if (err < 0) {
		if (!t->nr_failed) {
			t->first_error = err;
			t->first_why = why;
		}
		t->nr_failed++;
	} else {
		t->nr_ready++;
	}
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

void ublk_queue_report_ended(struct ublk_queue *q)
{
	__u64 one = 1;

	if (q->ended)
		return;
	q->ended = 1;
	if (write(q->tally->notify, &one, sizeof(one)) < 0) {
		/* cannot overflow with at most nr_queues writes */
	}
}

void ublk_queue_drain(struct ublk_queue *q)
{
	int tries = 50;

	while (q->ring_ready && q->tgt_inflight > 0 && tries-- > 0) {
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		io_uring_submit_and_wait_timeout(&q->ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			if (UD_KIND(cqe->user_data) == UD_TGT) {
				q->tgt_inflight--;
				q->ios[UD_TAG(cqe->user_data)].tgt_inflight--;
			}
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
	}
}
