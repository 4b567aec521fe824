/*
 * One device's data plane: open /dev/ublkcN (udev may still be creating it or changing its owner),
 * set up the target and the queues, start and stop them, release them.
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

static int tally_init(struct ublk_queue_tally *t)
{
	memset(t, 0, sizeof(*t));
	t->notify = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->notify < 0)
		return -errno;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	return 0;
}

static void tally_destroy(struct ublk_queue_tally *t)
{
	if (t->notify < 0)
		return;
	close(t->notify);
	t->notify = -1;
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
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
	s->queue_threads = cfg->queue_threads;
	s->cdev_fd = -1;
	s->tally.notify = -1;
	s->tgt.fd = -1;

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
	ret = tally_init(&s->tally);
	if (ret < 0) {
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
	ret = s->tgt.ops->init ? s->tgt.ops->init(&s->tgt, &cfg->tgt, why) : 0;
	if (ret < 0) {
		s->tgt.ops = NULL; /* nothing to deinit */
		goto fail;
	}
	for (q = 0; q < s->nr_queues; q++) {
		struct ublk_queue_config qc = {
			.q_id = q, .depth = s->depth, .buf_size = cfg->buf_size, .cdev_fd = s->cdev_fd,
			.legacy = cfg->legacy, .tgt = &s->tgt, .handoff = &s->handoff, .tally = &s->tally,
		};

		ret = ublk_queue_new(&s->queues[q], &qc);
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

/* Lua-owned rings: set up here, on the owner's thread, which serves them from then on. */
static int start_rings(struct ublk_server *s, const char **why)
{
	int q, ret = 0;

	for (q = 0; q < s->nr_queues && ret >= 0; q++) {
		ret = ublk_queue_start(s->queues[q], 1, why);
		ublk_queue_report_ready(s->queues[q], ret, *why);
	}
	return ret;
}

static int start_threads(struct ublk_server *s, const cpu_set_t *cpus, const int *has_cpus, const char **why)
{
	struct ublk_queue_tally *t = &s->tally;
	sigset_t all, old;
	int q, ret = 0;

	/* Queue threads take no signals: SIGINT/SIGTERM go to the Lua thread, which stops them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (q = 0; q < s->nr_queues; q++) {
		struct ublk_queue *queue = s->queues[q];

		if (has_cpus && has_cpus[q]) {
			queue->cpus = cpus[q];
			queue->has_cpus = 1;
		}
		ret = -pthread_create(&queue->thread, NULL, ublk_queue_thread, queue);
		if (ret < 0) {
			*why = "pthread_create for a queue";
			break;
		}
		queue->thread_started = 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	pthread_mutex_lock(&t->lock);
	while (t->nr_ready + t->nr_failed < q)
		pthread_cond_wait(&t->cond, &t->lock);
	if (!ret && t->nr_failed) {
		ret = t->first_error;
		*why = t->first_why;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

int ublk_server_start(struct ublk_server *s, const cpu_set_t *cpus, const int *has_cpus, const char **why)
{
	int ret;

	if (s->started) {
		*why = "starting the queues again (a server runs once: stop it and serve the device anew)";
		return -EALREADY;
	}
	s->started = 1; /* once, on a server fresh from calloc: its tallies start at zero */
	s->running = 1;
	ret = s->queue_threads ? start_threads(s, cpus, has_cpus, why) : start_rings(s, why);
	if (ret < 0)
		ublk_server_stop(s);
	return ret;
}

void ublk_server_stop(struct ublk_server *s)
{
	int q;

	if (!s->running)
		return;
	s->running = 0;
	if (!s->queue_threads) {
		for (q = 0; q < s->nr_queues; q++) {
			ublk_queue_drain(s->queues[q]);
			ublk_queue_exit(s->queues[q]);
			ublk_queue_report_ended(s->queues[q]);
		}
		return;
	}
	for (q = 0; q < s->nr_queues; q++)
		if (s->queues[q]->thread_started)
			ublk_queue_request_stop(s->queues[q]);
	for (q = 0; q < s->nr_queues; q++) {
		if (s->queues[q]->thread_started) {
			pthread_join(s->queues[q]->thread, NULL);
			s->queues[q]->thread_started = 0;
		}
	}
}

int ublk_server_alive(struct ublk_server *s)
{
	struct ublk_queue_tally *t = &s->tally;
	__u64 n;
	int alive;

	/* the notify counter holds the queues that ended since the last look */
	if (read(t->notify, &n, sizeof(n)) == sizeof(n))
		s->nr_ended += (int)n;
	pthread_mutex_lock(&t->lock);
	alive = t->nr_ready - s->nr_ended;
	pthread_mutex_unlock(&t->lock);
	return s->running && alive > 0 ? alive : 0;
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
	tally_destroy(&s->tally);
	ublk_handoff_destroy(&s->handoff);
	free(s);
}
