/*
 * /dev/ublk-control and its ring. The kernel reads the command header from the SQE's command area,
 * which holds 80 bytes only in a 128-byte SQE (it answers -EINVAL otherwise): the ring is always
 * IORING_SETUP_SQE128 (and CQE32, as the driver's reference servers use).
 */
#include "ctrl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


int ublk_ctrl_open(struct ublk_ctrl **out, const char *path)
{
	struct ublk_ctrl *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = open(path, O_RDWR | O_CLOEXEC);
	if (c->fd < 0) {
		ret = -errno;
		goto fail_free;
	}
	ret = io_uring_queue_init(UBLK_CTRL_DEPTH, &c->ring, IORING_SETUP_SQE128 | IORING_SETUP_CQE32);
	if (ret < 0)
		goto fail_close;
	c->refs = 1;
	*out = c;
	return 0;

fail_close:
	close(c->fd);
fail_free:
	free(c);
	return ret;
}

void ublk_ctrl_unref(struct ublk_ctrl *c)
{
	if (!c || --c->refs > 0)
		return;
	io_uring_queue_exit(&c->ring);
	close(c->fd);
	free(c);
}

/* liburing 2.3 has no io_uring_prep_uring_cmd: this is the one place an URING_CMD SQE is filled. */
void ublk_ctrl_prep(unsigned char image[128], int fd, __u32 cmd_op, const struct ublksrv_ctrl_cmd *header)
{
	struct io_uring_sqe *sqe = (struct io_uring_sqe *)image;

	memset(image, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fd;
	sqe->cmd_op = cmd_op;
	memcpy(sqe->cmd, header, sizeof(*header));
}

int ublk_ctrl_submit(struct ublk_ctrl *c, const unsigned char image[128], __u64 *tag)
{
	struct io_uring_sqe *sqe;
	int ret;

	if (c->inflight + c->nstash >= UBLK_CTRL_DEPTH)
		return -EBUSY; /* more nested commands than we keep answers for */
	sqe = io_uring_get_sqe(&c->ring);
	if (!sqe)
		return -EBUSY;
	memcpy(sqe, image, 128);
	*tag = ++c->last_tag;
	io_uring_sqe_set_data64(sqe, *tag);
	ret = io_uring_submit(&c->ring);
	if (ret < 0)
		return ret;
	c->inflight++;
	return 0;
}

static int unstash(struct ublk_ctrl *c, __u64 tag, int *res)
{
	unsigned i;

	for (i = 0; i < c->nstash; i++) {
		if (c->stash[i].tag == tag) {
			*res = c->stash[i].res;
			c->stash[i] = c->stash[--c->nstash];
			return 1;
		}
	}
	return 0;
}

int ublk_ctrl_reap(struct ublk_ctrl *c, __u64 tag, int wait, int *res)
{
	struct io_uring_cqe *cqe;
	int ret;

	for (;;) {
		if (unstash(c, tag, res))
			return 1;
		do
			ret = wait ? io_uring_wait_cqe(&c->ring, &cqe) : io_uring_peek_cqe(&c->ring, &cqe);
		while (ret == -EINTR);
		if (ret == -EAGAIN && !wait)
			return 0;
		if (ret < 0)
			return ret;
		if (c->inflight)
			c->inflight--;
		if (cqe->user_data == tag) {
			*res = cqe->res;
			io_uring_cqe_seen(&c->ring, cqe);
			return 1;
		}
		/* an answer for a command this one nests in (or that nests in it): keep it for that one;
		 * there is room, since submit counts the stash with the commands out */
		c->stash[c->nstash].tag = cqe->user_data;
		c->stash[c->nstash++].res = cqe->res;
		io_uring_cqe_seen(&c->ring, cqe);
	}
}

int ublk_ctrl_run(struct ublk_ctrl *c, const unsigned char image[128], int *from_ring)
{
	int ret, res = 0;
	__u64 tag;

	if (from_ring)
		*from_ring = 1;
	ret = ublk_ctrl_submit(c, image, &tag);
	if (ret < 0)
		return ret;
	ret = ublk_ctrl_reap(c, tag, 1, &res);
	if (ret < 0)
		return ret;
	if (from_ring)
		*from_ring = 0;
	return res;
}

int ublk_ctrl_device_command(struct ublk_ctrl *c, unsigned nr, unsigned dir, __u32 dev_id,
			     void (*idle)(void *), void *arg)
{
	struct ublksrv_ctrl_cmd header;
	unsigned char image[128];
	__u64 tag;
	int ret, res;

	memset(&header, 0, sizeof(header));
	header.dev_id = dev_id;
	header.queue_id = (__u16)-1;
	ublk_ctrl_prep(image, c->fd, c->legacy ? nr : UBLK_U_CMD(dir, nr), &header);
	if (!idle)
		return ublk_ctrl_run(c, image, NULL);
	ret = ublk_ctrl_submit(c, image, &tag);
	if (ret < 0)
		return ret;
	for (;;) {
		struct pollfd p = { .fd = c->ring.ring_fd, .events = POLLIN };

		ret = ublk_ctrl_reap(c, tag, 0, &res);
		if (ret != 0)
			return ret < 0 ? ret : res;
		idle(arg);
		poll(&p, 1, 1); /* the answer, or a millisecond for idle's next turn */
	}
}

unsigned ublk_ctrl_delete_command(const struct ublk_ctrl *c, int served)
{
	return served && !c->legacy ? UBLK_CMD_DEL_DEV_ASYNC : UBLK_CMD_DEL_DEV;
}

int ublk_ctrl_delete_device(struct ublk_ctrl *c, __u32 dev_id, int served)
{
	unsigned nr = ublk_ctrl_delete_command(c, served);

	/* the ioctl directions of the two, as the kernel's header encodes them */
	return ublk_ctrl_device_command(c, nr, nr == UBLK_CMD_DEL_DEV_ASYNC ? _IOC_READ : _IOC_READ | _IOC_WRITE,
					dev_id, NULL, NULL);
}
