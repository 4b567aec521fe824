/*
 * The target of a device written in Lua (ublk.new{ handler = ... }): every op the handler table
 * names is hooked, so the queue threads hand it to the Lua thread and this target never sees it.
 * What reaches it is an op the table lacks, which the params already told the kernel not to send.
 */
#include <errno.h>

#include "../queue.h"
#include "../target.h"

static int lua_init(struct ublk_target *t, const struct ublk_target_config *cfg, const char **why)
{
	(void)t;
	(void)cfg;
	(void)why;
	return 0;
}

static int lua_queue_io(struct ublk_queue *q, int tag, const struct ublksrv_io_desc *iod, void *buf)
{
	(void)q;
	(void)tag;
	(void)iod;
	(void)buf;
	return -EOPNOTSUPP;
}

const struct ublk_target_ops ublk_target_lua = {
	.name = "lua",
	.init = lua_init,
	.queue_io = lua_queue_io,
	.sqes_per_io = 0,
};
