/* Lua-owned rings (rings.h). */
#include "rings.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

/* Whether the server's rings are the owner's to serve, and running. */
static int owned(const struct ublk_server *s)
{
	return s && !s->queue_threads && s->running;
}

/* What was queued goes to the kernel (counted): 0 or -errno. */
static int submit(struct ublk_queue *q)
{
	int ret = io_uring_submit(&q->ring);

	if (ret > 0)
		QUEUE_STAT_ADD(q, submits, (uint64_t)ret);
	return ret < 0 ? ret : 0;
}

/* One pass over one ring's CQ, the requests for Lua into out (room for depth). */
static int reap_queue(struct ublk_queue *q, struct ublk_handoff_req *out)
{
	struct ublk_handoff_req *batch = q->to_lua;
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int nr;

	if (!q->ring_ready || (!io_uring_cq_ready(&q->ring) && !io_uring_sq_ready(&q->ring)))
		return 0; /* each dispatch looks twice (its poll and its run): most looks find nothing */
	q->to_lua = out;
	q->nr_to_lua = 0;
	io_uring_for_each_cqe(&q->ring, head, cqe) {
		ublk_queue_handle_cqe(q, cqe); /* nothing else is on these rings: no door, no knock */
		n++;
	}
	io_uring_cq_advance(&q->ring, n);
	nr = q->nr_to_lua;
	q->to_lua = batch;
	q->nr_to_lua = 0;
	if (nr && q->handoff->closed) {
		/* the Lua side is gone (this thread closed it: no lock needed); they go with the submit below */
		ublk_queue_refuse(q, out, nr);
		nr = 0;
	}
	if (nr)
		ublk_queue_stamp(out, nr);
	if (n)
		QUEUE_STAT_ADD(q, wakeups, 1);
	if (io_uring_sq_ready(&q->ring))
		submit(q); /* one that fails leaves its SQEs for the next reap (ublk_rings_ready: 2) */
	/* once: a commit sent after the abort (an answer Lua gave late) comes back ABORT too */
	if (ublk_queue_done(q))
		ublk_queue_report_ended(q);
	return nr;
}

size_t ublk_rings_reap(struct ublk_server *s, struct ublk_handoff_req *out)
{
	size_t total = 0;
	int q;

	if (!owned(s))
		return 0;
	for (q = 0; q < s->nr_queues; q++)
		total += (size_t)reap_queue(s->queues[q], out + total);
	return total;
}

void ublk_rings_pump(struct ublk_server *s)
{
	int q;

	if (!owned(s))
		return;
	for (q = 0; q < s->nr_queues; q++)
		reap_queue(s->queues[q], s->queues[q]->to_lua); /* abandoned: all answered EIO */
}

int ublk_rings_commit(struct ublk_server *s, int q_id, const struct ublk_remote_done *done, int n)
{
	struct ublk_queue *q = s->queues[q_id];
	int i;

	if (!q->ring_ready)
		return 0;
	for (i = 0; i < n; i++)
		ublk_queue_answer(q, &done[i]);
	return submit(q);
}

int ublk_rings_ready(struct ublk_server *s)
{
	int q, any = 0;

	if (!owned(s))
		return 0;
	for (q = 0; q < s->nr_queues; q++) {
		struct io_uring *ring = &s->queues[q]->ring;

		if (!s->queues[q]->ring_ready)
			continue;
		if (io_uring_cq_ready(ring))
			return 1;
		if (io_uring_sq_ready(ring))
			any = 2;
	}
	return any;
}

int ublk_rings_watch(struct ublk_server *s, int epfd, uint64_t data)
{
	struct epoll_event ev;
	int q;

	if (!owned(s))
		return 0;
	for (q = 0; q < s->nr_queues; q++) {
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.u64 = data | (uint64_t)q;
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->queues[q]->ring.ring_fd, &ev) < 0)
			return -errno;
	}
	return 0;
}
