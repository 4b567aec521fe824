/*
 * ram: a sparse memory disk. Pages (4 KiB) are allocated on first write and freed by DISCARD and
 * WRITE_ZEROES; a page never written reads as zeros, so `size` may exceed physical memory as long as
 * it is not filled. Two levels: a directory of leaves, each leaf 512 page pointers (2 MiB of disk),
 * allocated on first use. Queues run in parallel: a page appears with one compare-and-swap; freeing
 * takes the page's stripe lock exclusively, which readers and writers hold shared.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../queue.h"
#include "../target.h"

#define RAM_PAGE 4096U
#define LEAF_PAGES 512U
#define STRIPES 64U

struct ram_leaf {
	_Atomic(unsigned char *) pages[LEAF_PAGES];
};

struct ram_disk {
	uint64_t nr_pages;
	uint64_t nr_leaves;
	_Atomic(struct ram_leaf *) *leaves;
	atomic_llong allocated; /* pages in use, for stats */
	pthread_rwlock_t stripes[STRIPES];
};

static int ram_init(struct ublk_target *t, const struct ublk_target_config *cfg, const char **why)
{
	struct ram_disk *d;
	unsigned i;

	d = calloc(1, sizeof(*d));
	if (!d)
		goto nomem;
	d->nr_pages = (cfg->size + RAM_PAGE - 1) / RAM_PAGE;
	d->nr_leaves = (d->nr_pages + LEAF_PAGES - 1) / LEAF_PAGES;
	/* large callocs are fresh anonymous mappings: untouched directory pages cost nothing */
	d->leaves = calloc(d->nr_leaves, sizeof(d->leaves[0]));
	if (!d->leaves) {
		free(d);
		goto nomem;
	}
	for (i = 0; i < STRIPES; i++)
		pthread_rwlock_init(&d->stripes[i], NULL);
	t->data = d;
	return 0;
nomem:
	*why = "allocating the ram disk's page directory";
	return -ENOMEM;
}

static void ram_deinit(struct ublk_target *t)
{
	struct ram_disk *d = t->data;
	uint64_t l;
	unsigned i;

	if (!d)
		return;
	for (l = 0; l < d->nr_leaves; l++) {
		struct ram_leaf *leaf = atomic_load(&d->leaves[l]);

		if (!leaf)
			continue;
		for (i = 0; i < LEAF_PAGES; i++)
			free(atomic_load(&leaf->pages[i]));
		free(leaf);
	}
	for (i = 0; i < STRIPES; i++)
		pthread_rwlock_destroy(&d->stripes[i]);
	free(d->leaves);
	free(d);
	t->data = NULL;
}

static _Atomic(unsigned char *) *page_slot(struct ram_disk *d, uint64_t pg, int create)
{
	_Atomic(struct ram_leaf *) *lp = &d->leaves[pg / LEAF_PAGES];
	struct ram_leaf *leaf = atomic_load(lp);

	if (!leaf) {
		struct ram_leaf *fresh, *expected = NULL;

		if (!create)
			return NULL;
		fresh = calloc(1, sizeof(*fresh));
		if (!fresh)
			return NULL;
		if (atomic_compare_exchange_strong(lp, &expected, fresh)) {
			leaf = fresh;
		} else {
			free(fresh);
			leaf = expected;
		}
	}
	return &leaf->pages[pg % LEAF_PAGES];
}

static pthread_rwlock_t *stripe(struct ram_disk *d, uint64_t pg)
{
	return &d->stripes[pg % STRIPES];
}

/* Copy one page-bounded piece between the disk and buf. */
static int ram_read_piece(struct ram_disk *d, uint64_t pg, unsigned off, unsigned len, unsigned char *buf)
{
	_Atomic(unsigned char *) *slot = page_slot(d, pg, 0);
	unsigned char *page;

	pthread_rwlock_rdlock(stripe(d, pg));
	page = slot ? atomic_load(slot) : NULL;
	if (page)
		memcpy(buf, page + off, len);
	else
		memset(buf, 0, len);
	pthread_rwlock_unlock(stripe(d, pg));
	return 0;
}

static int ram_write_piece(struct ram_disk *d, uint64_t pg, unsigned off, unsigned len, const unsigned char *buf)
{
	_Atomic(unsigned char *) *slot = page_slot(d, pg, 1);
	unsigned char *page;
	int ret = 0;

	if (!slot)
		return -ENOSPC;
	pthread_rwlock_rdlock(stripe(d, pg));
	page = atomic_load(slot);
	if (!page) {
		unsigned char *expected = NULL;

		page = calloc(1, RAM_PAGE);
		if (!page) {
			ret = -ENOSPC;
			goto out;
		}
		if (atomic_compare_exchange_strong(slot, &expected, page)) {
			atomic_fetch_add(&d->allocated, 1);
		} else {
			free(page);
			page = expected;
		}
	}
	memcpy(page + off, buf, len);
out:
	pthread_rwlock_unlock(stripe(d, pg));
	return ret;
}

/* DISCARD and WRITE_ZEROES: whole pages are freed, partial ones zeroed in place. */
static void ram_zero_piece(struct ram_disk *d, uint64_t pg, unsigned off, unsigned len)
{
	_Atomic(unsigned char *) *slot = page_slot(d, pg, 0);
	unsigned char *page;

	if (!slot)
		return;
	if (off == 0 && len == RAM_PAGE) {
		pthread_rwlock_wrlock(stripe(d, pg));
		page = atomic_exchange(slot, NULL);
		pthread_rwlock_unlock(stripe(d, pg));
		if (page) {
			free(page);
			atomic_fetch_sub(&d->allocated, 1);
		}
		return;
	}
	pthread_rwlock_rdlock(stripe(d, pg));
	page = atomic_load(slot);
	if (page)
		memset(page + off, 0, len);
	pthread_rwlock_unlock(stripe(d, pg));
}

static int ram_queue_io(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf)
{
	struct ram_disk *d = q->tgt->data;
	unsigned op = ublksrv_get_op(iod);
	uint64_t pos = iod->start_sector << 9;
	uint64_t left = (uint64_t)iod->nr_sectors << 9;
	unsigned char *p = buf;
	int ret = 0;

	(void)tag;
	if (op != UBLK_IO_OP_READ && op != UBLK_IO_OP_WRITE && op != UBLK_IO_OP_FLUSH &&
	    op != UBLK_IO_OP_DISCARD && op != UBLK_IO_OP_WRITE_ZEROES)
		return -EOPNOTSUPP;
	if (pos + left > q->tgt->size)
		return -EIO;
	while (left && !ret) {
		uint64_t pg = pos / RAM_PAGE;
		unsigned off = (unsigned)(pos % RAM_PAGE);
		unsigned len = RAM_PAGE - off < left ? RAM_PAGE - off : (unsigned)left;

		if (op == UBLK_IO_OP_READ)
			ret = ram_read_piece(d, pg, off, len, p);
		else if (op == UBLK_IO_OP_WRITE)
			ret = ram_write_piece(d, pg, off, len, p);
		else if (op == UBLK_IO_OP_DISCARD || op == UBLK_IO_OP_WRITE_ZEROES)
			ram_zero_piece(d, pg, off, len);
		pos += len;
		left -= len;
		p += len;
	}
	if (ret < 0)
		return ret;
	return op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE ? (int)(iod->nr_sectors << 9) : 0;
}

static unsigned long long ram_memory(const struct ublk_target *t)
{
	struct ram_disk *d = t->data;

	return d ? (unsigned long long)atomic_load(&d->allocated) * RAM_PAGE : 0;
}

const struct ublk_target_ops ublk_target_ram = {
	.name = "ram",
	.init = ram_init,
	.deinit = ram_deinit,
	.queue_io = ram_queue_io,
	.sqes_per_io = 0,
	.memory = ram_memory,
};
