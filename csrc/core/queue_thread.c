/*
 * The queue thread: a queue's daemon of its own. Everything it queues during one wake-up goes to the
 * kernel in one io_uring_submit_and_wait, so a burst of N requests costs one syscall, not N. Other
 * threads reach it through its door: an eventfd its own ring reads, knocked to deliver the Lua
 * thread's answers or to ask it to stop.
 */
#include "queue.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static void arm_door(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = ublk_queue_get_sqe(q);

	io_uring_prep_read(sqe, q->door, &q->door_value, sizeof(q->door_value), 0);
	io_uring_sqe_set_data64(sqe, (__u64)UD_DOOR << 16);
}

int ublk_queue_post_answers(struct ublk_queue *q, const struct ublk_remote_done *done, int n)
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

/* The answers posted since the last look. */
static void take_answers(struct ublk_queue *q)
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
			ublk_queue_answer(q, &done[i]);
	} while (n == 64);
}

/* This wake-up's requests for Lua join the hand-off in one go; when the Lua side is gone they
 * are answered here. */
static void hand_off(struct ublk_queue *q)
{
	struct ublk_handoff *h = q->handoff;
	int ret;

	if (!q->nr_to_lua)
		return;
	ublk_queue_stamp(q->to_lua, q->nr_to_lua);
	ret = ublk_handoff_push(h, q->to_lua, q->nr_to_lua);
	if (ret < 0) {
		ublk_queue_refuse(q, q->to_lua, q->nr_to_lua);
	} else if (ret > 0) {
		/* the knock goes with the submit the thread makes next, before it sleeps; an eventfd
		 * write completes at once and posts nothing unless it fails */
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

/* A CQE that is the thread's own: the door, or a knock that failed. */
static void handle_own_cqe(struct ublk_queue *q, unsigned kind, const struct io_uring_cqe *cqe)
{
	if (kind == UD_KNOCK) {
		/* only a failed knock posts (a kernel without CQE_SKIP_SUCCESS refuses the SQE): knock
		 * the plain way, or the Lua side would never hear of the batch */
		ublk_handoff_knock(q->handoff);
	} else if (kind == UD_DOOR) {
		take_answers(q);
		/* re-armed even when stopping: requests still with the Lua thread come back this way */
		if (cqe->res >= 0 || cqe->res == -EINTR || cqe->res == -EAGAIN)
			arm_door(q);
		else if (!q->stats.cmd_error)
			QUEUE_STAT_SET(q, cmd_error, cqe->res); /* a door that fails for good: say so, do not spin */
	}
}

static void serve_loop(struct ublk_queue *q)
{
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int ret;

		hand_off(q);
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
			unsigned kind = ublk_queue_handle_cqe(q, cqe);

			if (kind)
				handle_own_cqe(q, kind, cqe);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
	}
	/* Commits queued on the way out still complete their requests. */
	io_uring_submit(&q->ring);
}

void *ublk_queue_thread(void *arg)
{
	struct ublk_queue *q = arg;
	const char *why = NULL;
	int ret;

	if (q->has_cpus)
		pthread_setaffinity_np(pthread_self(), sizeof(q->cpus), &q->cpus); /* a hint: ignore refusal */
	ret = ublk_queue_start(q, 0, &why);
	ublk_queue_report_ready(q, ret, why);
	if (ret < 0)
		return NULL;
	arm_door(q);
	serve_loop(q);
	ublk_queue_exit(q);
	ublk_queue_report_ended(q);
	return NULL;
}
