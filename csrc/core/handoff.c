/* The queue-to-Lua request list (handoff.h). */
#include "handoff.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int ublk_handoff_init(struct ublk_handoff *h, unsigned hook_mask, size_t cap)
{
	int ret;

	memset(h, 0, sizeof(*h));
	h->efd = -1;
	h->list = calloc(cap, sizeof(h->list[0]));
	if (!h->list)
		return -ENOMEM;
	h->cap = cap;
	h->hook_mask = hook_mask;
	h->knock_value = 1;
	h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->efd < 0) {
		ret = -errno;
		free(h->list);
		h->list = NULL;
		return ret;
	}
	ret = pthread_mutex_init(&h->lock, NULL);
	if (ret) {
		close(h->efd);
		free(h->list);
		h->list = NULL;
		h->efd = -1;
		return -ret;
	}
	return 0;
}

void ublk_handoff_destroy(struct ublk_handoff *h)
{
	if (!h->list)
		return;
	pthread_mutex_destroy(&h->lock);
	close(h->efd);
	free(h->list);
	h->list = NULL;
	h->efd = -1;
}

int ublk_handoff_push(struct ublk_handoff *h, const struct ublk_handoff_req *reqs, int n)
{
	int was_empty;

	pthread_mutex_lock(&h->lock);
	if (h->closed) {
		pthread_mutex_unlock(&h->lock);
		return -ESHUTDOWN;
	}
	was_empty = h->n == 0;
	/* cannot overflow: each tag is listed at most once and cap counts every tag */
	memcpy(h->list + h->n, reqs, (size_t)n * sizeof(reqs[0]));
	__atomic_store_n(&h->n, h->n + (size_t)n, __ATOMIC_RELEASE); /* read unlocked: ublk_handoff_pending */
	pthread_mutex_unlock(&h->lock);
	/* One knock per batch into an empty list: the Lua side takes the whole list each time. The
	 * knock comes after the push, so a take that raced ahead of it only makes it spurious. */
	return was_empty;
}

void ublk_handoff_knock(struct ublk_handoff *h)
{
	if (write(h->efd, &h->knock_value, sizeof(h->knock_value)) < 0) {
		/* an eventfd write fails only on counter overflow, which knocks never reach */
	}
}

static size_t take_locked(struct ublk_handoff *h, struct ublk_handoff_req *out)
{
	size_t n = h->n;

	memcpy(out, h->list, n * sizeof(out[0]));
	__atomic_store_n(&h->n, 0, __ATOMIC_RELEASE);
	return n;
}

size_t ublk_handoff_take(struct ublk_handoff *h, struct ublk_handoff_req *out)
{
	size_t n;

	/* A push after this take finds the list empty and knocks again: nothing stays listed without
	 * a knock to come. The counter is never read (edge-triggered); it cannot reach its maximum. */
	pthread_mutex_lock(&h->lock);
	n = take_locked(h, out);
	pthread_mutex_unlock(&h->lock);
	return n;
}

size_t ublk_handoff_close(struct ublk_handoff *h, struct ublk_handoff_req *out)
{
	size_t n;

	pthread_mutex_lock(&h->lock);
	h->closed = 1;
	n = take_locked(h, out);
	pthread_mutex_unlock(&h->lock);
	return n;
}
