/*
 * One device's data plane: open /dev/ublkcN (udev may still be creating it or changing its owner),
 * set up the target and the queues, start the queue threads, stop and release them.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* udev creates the node and may chmod/chown it after; the driver allows one opener (EBUSY). */
static int open_cdev(int dev_id, int timeout_ms)
{
	char path[32];
	long deadline = now_ms() + timeout_ms;
	int fd;

	snprintf(path, sizeof(path), "/dev/ublkc%d", dev_id);
	for (;;) {
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0)
			return fd;
		if ((errno != ENOENT && errno != EACCES && errno != EBUSY) || now_ms() >= deadline)
			return -errno;
		usleep(10000);
	}
}

int ublk_server_new(struct ublk_server **out, const struct ublk_server_config *cfg, const char **why)
{
	struct ublk_server *s;
	int q, ret;

	s = calloc(1, sizeof(*s));
	if (!s) {
		*why = "allocating the server";
		return -ENOMEM;
	}
	s->dev_id = cfg->dev_id;
	s->nr_queues = cfg->nr_queues;
	s->depth = cfg->depth;
	s->buf_size = cfg->buf_size;
	s->legacy = cfg->legacy;
	s->inline_lua = cfg->inline_lua;
	s->cdev_fd = -1;
	s->notify = -1;
	s->tgt.fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);

	s->tgt.ops = ublk_target_find(cfg->tgt.name);
	if (!s->tgt.ops) {
		*why = "finding the target";
		ret = -ENOENT;
		goto fail;
	}
	s->queues = calloc((size_t)s->nr_queues, sizeof(s->queues[0]));
	if (!s->queues) {
		*why = "allocating the queues";
		ret = -ENOMEM;
		goto fail;
	}
	ret = ublk_handoff_init(&s->handoff, cfg->hook_mask, (size_t)s->nr_queues * (size_t)s->depth);
	if (ret < 0) {
		*why = "setting up the hand-off to Lua";
		goto fail;
	}
	s->notify = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->notify < 0) {
		ret = -errno;
		*why = "eventfd";
		goto fail;
	}
	ret = open_cdev(s->dev_id, cfg->open_timeout_ms);
	if (ret < 0) {
		*why = "opening the char device";
		goto fail;
	}
	s->cdev_fd = ret;
	s->tgt.size = cfg->tgt.size;
	s->tgt.block_size = cfg->tgt.block_size;
	s->tgt.read_only = cfg->tgt.read_only;
	ret = s->tgt.ops->init(&s->tgt, &cfg->tgt, why);
	if (ret < 0) {
		s->tgt.ops = NULL; /* nothing to deinit */
		goto fail;
	}
	for (q = 0; q < s->nr_queues; q++) {
		ret = ublk_queue_new(&s->queues[q], s, q);
		if (ret < 0) {
			*why = "mapping the queue's descriptors and buffers";
			goto fail;
		}
	}
	*out = s;
	return 0;

fail:
	ublk_server_free(s);
	return ret;
}

void ublk_server_queue_ready(struct ublk_server *s, int err, const char *why)
{
	pthread_mutex_lock(&s->lock);
	if (err < 0) {
		if (!s->nr_failed) {
			s->first_error = err;
			s->first_why = why;
		}
		s->nr_failed++;
	} else {
		s->nr_ready++;
	}
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void ublk_server_queue_ended(struct ublk_server *s)
{
	__u64 one = 1;

	if (write(s->notify, &one, sizeof(one)) < 0) {
		/* cannot overflow with at most nr_queues knocks */
	}
}

int ublk_server_start(struct ublk_server *s, const cpu_set_t *cpus, const int *has_cpus, const char **why)
{
	sigset_t all, old;
	int q, ret = 0;

	if (s->started) {
		*why = "starting the queues again (a server runs once: stop it and serve the device anew)";
		return -EALREADY;
	}
	s->started = 1; /* once, on a server fresh from calloc: its counters start at zero */
	if (s->inline_lua) {
		for (q = 0; q < s->nr_queues; q++) {
			ret = ublk_queue_inline_start(s->queues[q], why);
			if (ret < 0)
				break;
		}
		s->nr_ready = q;
		s->running = 1;
		if (ret < 0)
			ublk_server_stop(s);
		return ret;
	}
	/* Queue threads take no signals: SIGINT/SIGTERM go to the Lua thread, which stops them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (q = 0; q < s->nr_queues; q++) {
		struct ublk_queue *queue = s->queues[q];

		if (has_cpus && has_cpus[q]) {
			queue->cpus = cpus[q];
			queue->has_cpus = 1;
		}
		ret = -pthread_create(&queue->thread, NULL, ublk_queue_main, queue);
		if (ret < 0) {
			*why = "pthread_create for a queue";
			break;
		}
		queue->thread_started = 1;
		s->running = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	pthread_mutex_lock(&s->lock);
	while (s->nr_ready + s->nr_failed < q)
		pthread_cond_wait(&s->cond, &s->lock);
	if (!ret && s->nr_failed) {
		ret = s->first_error;
		*why = s->first_why;
	}
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		ublk_server_stop(s);
	return ret;
}

void ublk_server_stop(struct ublk_server *s)
{
	int q;

	if (!s->running)
		return;
	if (s->inline_lua) {
		for (q = 0; q < s->nr_queues; q++)
			ublk_queue_inline_stop(s->queues[q]);
		s->running = 0;
		return;
	}
	for (q = 0; q < s->nr_queues; q++)
		if (s->queues[q] && s->queues[q]->thread_started)
			ublk_queue_request_stop(s->queues[q]);
	for (q = 0; q < s->nr_queues; q++) {
		if (s->queues[q] && s->queues[q]->thread_started) {
			pthread_join(s->queues[q]->thread, NULL);
			s->queues[q]->thread_started = 0;
		}
	}
	s->running = 0;
}

int ublk_server_alive(struct ublk_server *s)
{
	__u64 n;

	/* the notify counter holds the queues that ended since the last look */
	if (read(s->notify, &n, sizeof(n)) == sizeof(n)) {
		pthread_mutex_lock(&s->lock);
		s->nr_ended += (int)n;
		pthread_mutex_unlock(&s->lock);
	}
	return s->running ? s->nr_ready - s->nr_ended : 0;
}

void ublk_server_free(struct ublk_server *s)
{
	int q;

	if (!s)
		return;
	ublk_server_stop(s);
	if (s->queues) {
		for (q = 0; q < s->nr_queues; q++)
			ublk_queue_free(s->queues[q]);
		free(s->queues);
	}
	if (s->tgt.ops && s->tgt.ops->deinit)
		s->tgt.ops->deinit(&s->tgt);
	if (s->tgt.fd >= 0)
		close(s->tgt.fd);
	if (s->cdev_fd >= 0)
		close(s->cdev_fd);
	if (s->notify >= 0)
		close(s->notify);
	ublk_handoff_destroy(&s->handoff);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
