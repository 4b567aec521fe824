/*
 * The queue thread: FETCH_REQ for every tag, then for each request the kernel hands over, the
 * target's answer goes back in a COMMIT_AND_FETCH_REQ, which also asks for the tag's next request.
 * Everything the thread queues during one wake-up goes to the kernel in one io_uring_submit_and_wait,
 * so a burst of N requests costs one syscall, not N.
 */
#include "queue.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

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

int ublk_queue_new(struct ublk_queue **out, struct ublk_server *srv, int q_id)
{
	struct ublk_queue *q;
	size_t pg = page_size();
	off_t off;
	int ret;

	q = calloc(1, sizeof(*q) + (size_t)srv->depth * sizeof(q->ios[0]));
	if (!q)
		return -ENOMEM;
	q->srv = srv;
	q->tgt = &srv->tgt;
	q->q_id = q_id;
	q->depth = srv->depth;
	q->buf_size = srv->buf_size;
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
	      (off_t)q_id * (off_t)round_up(UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc), pg);
	q->descs_len = round_up((size_t)q->depth * sizeof(struct ublksrv_io_desc), pg);
	q->descs = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, srv->cdev_fd, off);
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
	if (q->descs != MAP_FAILED)
		munmap(q->descs, q->descs_len);
	/* Target I/O still out when the ring went (a backing store that did not answer within the
	 * inline ring's wait, or a ring that failed): a buffered read may still be copied into these
	 * buffers by an io-wq worker, so they stay mapped rather than be reused by a later mmap. */
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
	sqe->cmd_op = q->srv->legacy ? nr : UBLK_U_IO(nr);
	cmd = (struct ublksrv_io_cmd *)sqe->cmd;
	cmd->q_id = (__u16)q->q_id;
	cmd->tag = (__u16)tag;
	cmd->result = result;
	cmd->addr = (__u64)(uintptr_t)ublk_queue_buf(q, tag);
	io_uring_sqe_set_data64(sqe, (__u64)tag | ((__u64)UD_CMD << 16));
	q->ios[tag].flags |= IO_CMD_INFLIGHT;
	q->cmd_inflight++;
}

static void arm_door(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);

	io_uring_prep_read(sqe, q->door, &q->door_value, sizeof(q->door_value), 0);
	io_uring_sqe_set_data64(sqe, (__u64)UD_EVENT << 16);
}

void ublk_queue_complete(struct ublk_queue *q, int tag, int result)
{
	QUEUE_STAT_ADD(q, requests, 1);
	if (result < 0)
		QUEUE_STAT_ADD(q, errors, 1);
	queue_cmd(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, result);
}

int ublk_queue_complete_remote_batch(struct ublk_queue *q, const struct ublk_remote_done *done, int n)
{
	__u64 one = 1;
	int first;

	if (n <= 0)
		return 0;
	pthread_mutex_lock(&q->remote_lock);
	first = q->nr_remote == 0;
	/* cannot overflow: a tag comes back at most once per hand-off, and there are depth tags */
	memcpy(q->remote + q->nr_remote, done, (size_t)n * sizeof(done[0]));
	q->nr_remote += n;
	pthread_mutex_unlock(&q->remote_lock);
	/* One knock per batch: the queue drains the whole list on each wake-up. */
	if (first && write(q->door, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

void ublk_queue_request_stop(struct ublk_queue *q)
{
	__u64 one = 1;

	atomic_store(&q->stop, 1);
	if (write(q->door, &one, sizeof(one)) < 0) {
		/* an eventfd write only fails on counter overflow; the flag is already set */
	}
}

/* The target's turn: bytes/-errno now, or it queued SQEs and answers from io_done. */
static void serve_target(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod)
{
	int ret = q->tgt->ops->queue_io(q, tag, iod, ublk_queue_buf(q, tag));

	if (ret != UBLK_IO_QUEUED)
		ublk_queue_complete(q, tag, ret);
}

/* An answer from the Lua thread: the request is done, or goes on to the C target (a hook passed it). */
static void answered(struct ublk_queue *q, const struct ublk_remote_done *d)
{
	q->lua_inflight--;
	if (d->pass)
		serve_target(q, d->tag, &q->descs[d->tag]);
	else
		ublk_queue_complete(q, d->tag, d->result);
}

static void drain_remote(struct ublk_queue *q)
{
	struct ublk_remote_done done[64];
	int n, i;

	do {
		pthread_mutex_lock(&q->remote_lock);
		n = q->nr_remote < 64 ? q->nr_remote : 64;
		memcpy(done, q->remote + q->nr_remote - n, (size_t)n * sizeof(done[0]));
		q->nr_remote -= n;
		pthread_mutex_unlock(&q->remote_lock);
		for (i = 0; i < n; i++)
			answered(q, &done[i]);
	} while (n == 64);
}

/* When a batch for Lua was received: read once per batch, since every request in it came in the same
 * wake-up (or reap). */
static void stamp_batch(struct ublk_handoff_req *reqs, int n)
{
	struct timespec now;
	uint64_t ns;
	int i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
	for (i = 0; i < n; i++)
		reqs[i].received_ns = ns;
}

/* Requests for Lua once the Lua side is gone (stopping): answered EIO here, without Lua. */
static void answer_eio(struct ublk_queue *q, const struct ublk_handoff_req *reqs, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		q->lua_inflight--;
		ublk_queue_complete(q, reqs[i].tag, -EIO);
	}
}

/* This wake-up's requests for Lua join the shared list in one go; when the Lua side is gone they
 * are answered here. */
static void flush_to_lua(struct ublk_queue *q)
{
	int ret;

	if (!q->nr_to_lua)
		return;
	stamp_batch(q->to_lua, q->nr_to_lua);
	ret = ublk_handoff_push(&q->srv->handoff, q->to_lua, q->nr_to_lua);
	if (ret < 0) {
		answer_eio(q, q->to_lua, q->nr_to_lua);
	} else if (ret > 0) {
		/* the knock goes with the submit the thread makes next, before it sleeps; an eventfd
		 * write completes at once and posts nothing unless it fails */
		struct ublk_handoff *h = &q->srv->handoff;
		struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);

		if (!sqe) {
			ublk_handoff_knock(h);
		} else {
			io_uring_prep_write(sqe, h->efd, &h->knock_value, sizeof(h->knock_value), 0);
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			io_uring_sqe_set_data64(sqe, (__u64)UD_KNOCK << 16);
		}
	}
	q->nr_to_lua = 0;
}

/* READ_ONLY only makes the disk read-only to user space: in-kernel writers still reach us, and are
 * answered -EROFS here. Whether it did. */
static int refused_read_only(struct ublk_queue *q, int tag, unsigned op)
{
	if (!q->tgt->read_only || (op != UBLK_IO_OP_WRITE && op != UBLK_IO_OP_DISCARD && op != UBLK_IO_OP_WRITE_ZEROES))
		return 0;
	ublk_queue_complete(q, tag, -EROFS);
	return 1;
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

	if (refused_read_only(q, tag, op)) {
		/* answered */
	} else if (ublk_handoff_hooks(&q->srv->handoff, op)) {
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

static void handle_cqe(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	__u64 ud = cqe->user_data;
	int tag = UD_TAG(ud);

	switch (UD_KIND(ud)) {
	case UD_CMD:
		if (cmd_came_back(q, tag, cqe->res))
			serve(q, tag);
		break;
	case UD_TGT:
		q->tgt_inflight--;
		q->ios[tag].tgt_inflight--;
		q->srv->tgt.ops->io_done(q, tag, cqe);
		break;
	case UD_KNOCK:
		/* only a failed knock posts (a kernel without CQE_SKIP_SUCCESS refuses the SQE): knock
		 * the plain way, or the Lua side would never hear of the batch */
		ublk_handoff_knock(&q->srv->handoff);
		break;
	case UD_EVENT:
		drain_remote(q);
		/* re-armed even when stopping: requests still with the Lua thread come back this way */
		if (cqe->res >= 0 || cqe->res == -EINTR || cqe->res == -EAGAIN)
			arm_door(q);
		else if (!q->stats.cmd_error)
			QUEUE_STAT_SET(q, cmd_error, cqe->res); /* a door that fails for good: say so, do not spin */
		break;
	default:
		break;
	}
}

/* The ring: SINGLE_ISSUER | DEFER_TASKRUN keeps completions from interrupting the thread (task work
 * runs when it waits), COOP_TASKRUN where DEFER is missing; the char device is a fixed file. */
static int ring_setup(struct ublk_queue *q, const char **why, int polled)
{
	const struct ublk_target *t = &q->srv->tgt;
	unsigned entries = (unsigned)q->depth * (1U + (unsigned)t->ops->sqes_per_io) + 2;
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int fds[2] = { q->srv->cdev_fd, t->fd };
	unsigned i;
	int ret = -EINVAL;

	/* a ring the Lua thread polls through epoll: its task work must run without io_uring_enter
	 * (DEFER_TASKRUN would not), so no DEFER_TASKRUN */
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

static void serve_loop(struct ublk_queue *q)
{
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int ret;

		flush_to_lua(q);
		if (q->tgt_inflight == 0 && q->lua_inflight == 0 && (atomic_load(&q->stop) || q->cmd_inflight == 0))
			break;
		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			if (!q->stats.cmd_error)
				QUEUE_STAT_SET(q, cmd_error, ret);
			break;
		}
		if (ret > 0)
			QUEUE_STAT_ADD(q, submits, (uint64_t)ret);
		QUEUE_STAT_ADD(q, wakeups, 1);
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			handle_cqe(q, cqe);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
	}
	/* Commits queued on the way out still complete their requests. */
	io_uring_submit(&q->ring);
}

/* FETCH_REQ for every tag, in one submit: 0, or -errno with *why. */
static int fetch_all(struct ublk_queue *q, const char **why)
{
	int tag, ret;

	for (tag = 0; tag < q->depth; tag++)
		queue_cmd(q, tag, UBLK_IO_FETCH_REQ, -1);
	ret = io_uring_submit(&q->ring);
	if (ret >= 0)
		ret = fetch_failed(q);
	if (ret < 0)
		*why = "FETCH_REQ";
	return ret < 0 ? ret : 0;
}

/* The ring goes, if made: the FETCHes still with the kernel are cancelled. */
static void ring_exit(struct ublk_queue *q)
{
	if (q->ring_ready) {
		io_uring_queue_exit(&q->ring);
		q->ring_ready = 0;
	}
}

void *ublk_queue_main(void *arg)
{
	struct ublk_queue *q = arg;
	const char *why = NULL;
	int ret;

	if (q->has_cpus)
		pthread_setaffinity_np(pthread_self(), sizeof(q->cpus), &q->cpus); /* a hint: ignore refusal */
	ret = ring_setup(q, &why, 0);
	if (ret >= 0) {
		arm_door(q);
		ret = fetch_all(q, &why);
	}
	ublk_server_queue_ready(q->srv, ret, why);
	if (ret >= 0)
		serve_loop(q);
	ring_exit(q);
	ublk_server_queue_ended(q->srv);
	return NULL;
}

/* ---- inline queues: the Lua thread is the queue's daemon (no thread, no door, no hand-off) ---- */

/* The kernel aborted the queue and nothing of ours is still with it (commands or target I/O). */
static int inline_done(const struct ublk_queue *q)
{
	return q->kernel_stopping && q->cmd_inflight == 0 && q->tgt_inflight == 0;
}

int ublk_queue_inline_start(struct ublk_queue *q, const char **why)
{
	int ret = ring_setup(q, why, 1);

	if (ret >= 0)
		ret = fetch_all(q, why);
	if (ret < 0)
		ring_exit(q);
	return ret;
}

/* An inline queue's submit: what was queued goes to the kernel (counted); 0 or -errno. */
static int inline_submit(struct ublk_queue *q)
{
	int ret = io_uring_submit(&q->ring);

	if (ret > 0)
		QUEUE_STAT_ADD(q, submits, (uint64_t)ret);
	return ret < 0 ? ret : 0;
}

int ublk_queue_inline_reap(struct ublk_queue *q, struct ublk_handoff_req *out, int *ended)
{
	struct ublk_handoff_req *batch = q->to_lua;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int nr;

	*ended = 0;
	if (!q->ring_ready || (!io_uring_cq_ready(&q->ring) && !io_uring_sq_ready(&q->ring)))
		return 0; /* each dispatch looks twice (its poll and its run): most looks find nothing */
	/* what serve() hands to Lua goes straight into out: the queue thread's batch is not used here */
	q->to_lua = out;
	q->nr_to_lua = 0;
	io_uring_for_each_cqe(&q->ring, head, cqe) {
		handle_cqe(q, cqe); /* commands: to Lua or to the C target; the target's own completions */
		n++;
	}
	io_uring_cq_advance(&q->ring, n);
	nr = q->nr_to_lua;
	q->to_lua = batch;
	q->nr_to_lua = 0;
	if (nr && q->srv->handoff.closed) {
		/* the Lua side is gone (the Lua thread closed it: no lock needed); they go with the submit below */
		answer_eio(q, out, nr);
		nr = 0;
	}
	if (nr)
		stamp_batch(out, nr);
	if (n)
		QUEUE_STAT_ADD(q, wakeups, 1);
	if (io_uring_sq_ready(&q->ring))
		inline_submit(q); /* one that fails leaves its SQEs for the next reap (inline_ready: 2) */
	/* told once: a commit sent after the abort (an answer Lua gave late) comes back ABORT too */
	if (!q->inline_ended && inline_done(q))
		*ended = q->inline_ended = 1;
	return nr;
}

int ublk_queue_inline_commit(struct ublk_queue *q, const struct ublk_remote_done *done, int n)
{
	int i;

	if (!q->ring_ready)
		return 0;
	for (i = 0; i < n; i++)
		answered(q, &done[i]);
	return inline_submit(q);
}

/* The ring must not go while the target's I/O is with the kernel (it reads or writes the buffers,
 * which are unmapped next): wait for those completions, 5 s at most, as a queue thread does before it
 * leaves. Only counted: what they would answer is moot once the device is going. */
static void inline_wait_target(struct ublk_queue *q)
{
	int tries = 50;

	while (q->tgt_inflight > 0 && tries-- > 0) {
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

void ublk_queue_inline_stop(struct ublk_queue *q)
{
	if (q->ring_ready)
		inline_wait_target(q);
	ring_exit(q);
}

int ublk_queue_inline_ready(struct ublk_queue *q)
{
	if (!q->ring_ready)
		return 0;
	return io_uring_cq_ready(&q->ring) ? 1 : io_uring_sq_ready(&q->ring) ? 2 : 0;
}
