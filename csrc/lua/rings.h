/*
 * Lua-owned rings: a device without queue threads, whose queue rings the Lua thread serves itself
 * (server.h). Each ring is served as a queue thread would serve it (queue.c): ops without Lua go to
 * the C target, its completions are committed; the requests for Lua go into the caller's array.
 * Everything here runs on the Lua thread. Reap, pump, ready and watch do nothing for a server with
 * queue threads; commit is for Lua-owned rings only (the bridge posts a queue thread's answers).
 */
#ifndef LUA_UBLK_RINGS_H
#define LUA_UBLK_RINGS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/server.h"

/* What the rings hold: the requests for Lua go into out (room for every tag of every queue), or,
 * once the hand-off is closed (the Lua side abandoned them), are answered EIO. A queue the kernel
 * ended (every tag aborted, no target I/O out) is reported ended. How many went into out. */
size_t ublk_rings_reap(struct ublk_server *s, struct ublk_handoff_req *out);

/* A reap whose requests for Lua are all answered EIO: what serves the rings while a stop waits for
 * the kernel (the collector's STOP_DEV, which no dispatch serves). */
void ublk_rings_pump(struct ublk_server *s);

/* Answers for queue q, submitted at once (what a failed submit leaves goes with the next reap); a
 * passed request goes to the C target. 0 or -errno of the submit. */
int ublk_rings_commit(struct ublk_server *s, int q, const struct ublk_remote_done *done, int n);

/* Whether a reap has work: 1, completions in a ring; 2, only SQEs a failed submit left (the reap
 * submits them again); 0, nothing (what the rings' descriptors cannot show until the kernel's task
 * work has run). */
int ublk_rings_ready(struct ublk_server *s);

/* Watch every ring's descriptor in epfd, with data | q: 0 or -errno. */
int ublk_rings_watch(struct ublk_server *s, int epfd, uint64_t data);

#endif
