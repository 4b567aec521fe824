/* The bridge (bridge.h): its life next to the server, the requests Lua holds, and their answers. */
#include "bridge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "rings.h"

/* While a dispatch runs, a queue's answers go back at its end (ublk_bridge_flush), or once this
 * many wait: each send that finds the queue's list empty is a write(2) on its door and a wake-up
 * of its thread, which smaller batches pay too often (doc/design.md). */
#define ANSWER_EVERY 32

static void flush_queue(struct ublk_bridge *b, int q)
{
	const struct ublk_remote_done *done = b->done + (size_t)q * (size_t)b->depth;

	if (!b->nr_done[q])
		return;
	if (b->srv && b->srv->queue_threads)
		ublk_queue_post_answers(b->srv->queues[q], done, b->nr_done[q]);
	else if (b->srv)
		ublk_rings_commit(b->srv, q, done, b->nr_done[q]);
	b->nr_done[q] = 0;
}

void ublk_bridge_flush(struct ublk_bridge *b)
{
	int q;

	for (q = 0; q < b->nr_queues; q++)
		flush_queue(b, q);
}

void ublk_bridge_answer(struct ublk_bridge *b, int q_id, int tag, int result, int pass)
{
	struct bridge_slot *s = bridge_slot(b, q_id, tag);
	struct ublk_remote_done *d = &b->done[(size_t)q_id * (size_t)b->depth + (size_t)b->nr_done[q_id]++];

	s->held = 0;
	s->gen++;
	d->tag = (uint16_t)tag;
	d->pass = (uint16_t)pass;
	d->result = result;
	if (pass)
		b->passed++;
	else if (result < 0)
		b->errors++;
	if (!b->batching || b->nr_done[q_id] >= ANSWER_EVERY)
		flush_queue(b, q_id);
}

int ublk_bridge_watch_rings(struct ublk_bridge *b)
{
	if (!b || !b->srv || b->epfd < 0)
		return 0;
	return ublk_rings_watch(b->srv, b->epfd, EV_RING);
}

size_t ublk_bridge_take(struct ublk_bridge *b)
{
	size_t i;

	if (!b->srv || b->pos < b->n)
		return b->n - b->pos;
	b->n = ublk_handoff_take(&b->srv->handoff, b->taken);
	b->n += ublk_rings_reap(b->srv, b->taken + b->n);
	b->edge_unanswered = 0;
	b->pos = 0;
	b->requests += b->n;
	b->batches += b->n > 0;
	for (i = 0; i < b->n; i++) /* from here on, a stop answers them */
		bridge_slot(b, b->taken[i].q_id, b->taken[i].tag)->held = 1;
	return b->n;
}

int ublk_bridge_abandon(struct ublk_bridge *b)
{
	size_t n, i;
	int q, tag, count = 0;

	if (!b || !b->srv)
		return 0;
	b->batching++;
	n = ublk_handoff_close(&b->srv->handoff, b->closing);
	epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->srv->handoff.efd, NULL); /* nothing more comes (ENOENT the second time) */
	for (i = 0; i < n; i++) {
		/* listed, never taken: hold it just to answer it */
		bridge_slot(b, b->closing[i].q_id, b->closing[i].tag)->held = 1;
		ublk_bridge_answer(b, b->closing[i].q_id, b->closing[i].tag, -EIO, 0);
		count++;
	}
	/* and everything taken, whether its handler ran or not (a run below us skips these) */
	for (q = 0; q < b->nr_queues; q++)
		for (tag = 0; tag < b->depth; tag++)
			if (bridge_slot(b, q, tag)->held) {
				ublk_bridge_answer(b, q, tag, -EIO, 0);
				count++;
			}
	b->batching--;
	ublk_bridge_flush(b);
	return count;
}

void ublk_bridge_detach(struct ublk_bridge *b)
{
	int i;

	if (!b)
		return;
	b->srv = NULL; /* freed, or about to be: its queue threads are joined */
	for (i = 0; b->slots && i < b->nr_queues * b->depth; i++)
		b->slots[i].gen++; /* every request and buffer still referenced is now stale */
	/* no descriptor survives a stop: what a dispatch still asks of them (a nested one, after a
	 * handler stopped its device) finds nothing to wait for */
	if (b->epfd >= 0)
		close(b->epfd);
	if (b->timerfd >= 0)
		close(b->timerfd);
	b->epfd = b->timerfd = -1;
}

void ublk_bridge_free(struct ublk_bridge *b)
{
	if (!b)
		return;
	ublk_bridge_detach(b);
	free(b->slots);
	free(b->taken);
	free(b->closing);
	free(b->done);
	free(b->nr_done);
	free(b);
}

static int watch(int epfd, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.u64 = data;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int ublk_bridge_new(struct ublk_bridge **out, struct ublk_server *s, int hooks_pass)
{
	struct ublk_bridge *b;
	size_t n = (size_t)s->nr_queues * (size_t)s->depth;
	int ret;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->epfd = b->timerfd = -1;
	b->nr_queues = s->nr_queues;
	b->depth = s->depth;
	b->hooks_pass = hooks_pass;
	b->slots = calloc(n, sizeof(b->slots[0]));
	b->taken = calloc(n, sizeof(b->taken[0]));
	b->closing = calloc(n, sizeof(b->closing[0]));
	b->done = calloc(n, sizeof(b->done[0]));
	b->nr_done = calloc((size_t)s->nr_queues, sizeof(b->nr_done[0]));
	if (!b->slots || !b->taken || !b->closing || !b->done || !b->nr_done) {
		ret = -ENOMEM;
		goto fail;
	}
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	b->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (b->epfd < 0 || b->timerfd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = watch(b->epfd, b->timerfd, EPOLLIN, EV_TIMER);
	/* each knock is an edge: the counter is never read (handoff.h) */
	if (ret == 0)
		ret = watch(b->epfd, s->handoff.efd, EPOLLIN | EPOLLET, EV_HANDOFF);
	if (ret < 0)
		goto fail;
	b->srv = s;
	*out = b;
	return 0;

fail:
	ublk_bridge_free(b);
	return ret;
}
