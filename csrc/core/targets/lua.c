/*
 * The target of a device written in Lua (ublk.new{ handler = ... }): every op the handler table
 * names is hooked, so it goes to the Lua thread and never reaches this target. What does reach it is
 * an op the table lacks, which the params told the kernel not to send: with no queue_io, the queue
 * answers it EOPNOTSUPP.
 */
#include "../target.h"

const struct ublk_target_ops ublk_target_lua = {
	.name = "lua",
};
