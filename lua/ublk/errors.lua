--- Kernel refusals as sentences: which command, which errno, what the kernel checks that can produce
-- it, and which of the values we sent are suspect. The checks are those of drivers/block/ublk_drv.c
-- (6.12 and the newest; see doc/kernel-checks.md for the source lines).
-- @module ublk.errors
local core = require("ublk.core")

local M = {}

local errno_name = {}
for name, num in pairs(core.errno) do
  if not errno_name[num] or #name < #errno_name[num] then errno_name[num] = name end
end
errno_name[core.errno.EOPNOTSUPP] = "EOPNOTSUPP"

--- "EINVAL" for 22.
function M.name(errno) return errno_name[errno] or ("E" .. tostring(errno)) end

local function hex(n) return ("0x%x"):format(n) end

-- What the kernel checks, per command and errno. Each entry is a function of the context `c`
-- (c.info: the dev_info we sent, decoded; c.header: what we put in the header; c.opts: the user's
-- options) that returns a list of lines; a line that starts with "!" names a value of ours that is
-- suspect.
local checks = {}

local common = {
  EPERM = function()
    return { "the kernel requires CAP_SYS_ADMIN for a device that was not created unprivileged: run as root" }
  end,
  EACCES = function()
    return { "the caller may not use this device: unprivileged devices are checked against the permissions of /dev/ublkcN" }
  end,
  ENODEV = function(c)
    return { ("there is no ublk device %s (ublk list shows the ones that exist)"):format(tostring(c.dev_id)) }
  end,
  EOPNOTSUPP = function(c)
    return { ("the running kernel does not know %s (it is newer than this kernel's ublk driver, or the " ..
      "legacy opcodes are disabled by CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=n)"):format(c.command) }
  end,
  EFAULT = function() return { "the kernel could not read or write our buffer (a bad address: a bug in lua-ublk)" } end,
  EINTR = function() return { "a signal arrived while the kernel was waiting" } end,
  ENOMEM = function() return { "the kernel ran out of memory for the device's queues or tags" } end,
}

checks.ADD_DEV = {
  EINVAL = function(c)
    local i, h, lines = c.info or {}, c.header or {}, {}
    local function check(cond, text) lines[#lines + 1] = (cond and "! " or "  ") .. text end
    check(false, "the SQE must be 128 bytes (IORING_SETUP_SQE128): ours is")
    check((h.len or 64) < 64, ("header.len must be >= 64 and header.addr non-zero: we sent len %s"):format(tostring(h.len)))
    check(h.queue_id ~= nil and h.queue_id ~= 0xffff, ("header.queue_id must be 0xffff: we sent %s"):format(hex(h.queue_id or 0xffff)))
    check(i.queue_depth and (i.queue_depth < 1 or i.queue_depth > core.const.MAX_QUEUE_DEPTH),
      ("queue_depth must be 1..%d: we sent %s"):format(core.const.MAX_QUEUE_DEPTH, tostring(i.queue_depth)))
    check(i.nr_hw_queues and (i.nr_hw_queues < 1 or i.nr_hw_queues > core.const.MAX_NR_QUEUES),
      ("nr_hw_queues must be 1..%d: we sent %s"):format(core.const.MAX_NR_QUEUES, tostring(i.nr_hw_queues)))
    local f = i.flags or 0
    local rec = f & ((1 << 3) | (1 << 4) | (1 << 9))
    local ok_rec = rec == 0 or rec == (1 << 3) or rec == (1 << 3 | 1 << 4) or rec == (1 << 3 | 1 << 9)
    check(not ok_rec, "recovery flags: user_recovery_reissue and user_recovery_fail_io each need user_recovery, and not both")
    check(f & (1 << 12) ~= 0 and f & (1 << 3) == 0, "quiesce needs user_recovery")
    check(f & (1 << 16) ~= 0 and f & (1 << 7) == 0, "integrity needs user_copy")
    check(f & (1 << 8) ~= 0 and f & ((1 << 7) | 1) == 0, "zoned needs user_copy (or zero copy) and a kernel with CONFIG_BLK_DEV_ZONED")
    check(f & (1 << 5) ~= 0 and f & ((1 << 7) | 1 | (1 << 11)) ~= 0,
      "an unprivileged device cannot have user_copy, support_zero_copy or auto_buf_reg")
    check(h.dev_id ~= nil and i.dev_id ~= nil and h.dev_id ~= i.dev_id,
      ("header.dev_id must equal dev_info.dev_id: we sent %s and %s"):format(hex(h.dev_id or 0), hex(i.dev_id or 0)))
    check(h.dev_id and h.dev_id ~= 0xffffffff and h.dev_id >= 1 << 20,
      ("dev_id must be below %d (or 0xffffffff to let the kernel choose): we sent %s"):format(1 << 20, tostring(h.dev_id)))
    return lines
  end,
  EEXIST = function(c)
    return { ("device id %s is already taken (or still being deleted): choose another id, or leave id = nil " ..
      "to let the kernel pick one"):format(tostring(c.dev_id)) }
  end,
  ENOSPC = function() return { "every device number (2^20) is in use" } end,
  EACCES = function()
    local max = io.open("/sys/module/ublk_drv/parameters/ublks_max")
    local n = max and max:read("l"); if max then max:close() end
    return { ("the limit on unprivileged devices (ublk_drv's ublks_max = %s) is reached"):format(n or "?") }
  end,
  EPERM = function()
    return { "without CAP_SYS_ADMIN the kernel only creates unprivileged devices (flag unprivileged_dev), " ..
      "and /dev/ublk-control must be opened by the user: run as root" }
  end,
}

checks.SET_PARAMS = {
  EINVAL = function(c)
    local lines = {
      "the kernel's ublk_validate_params checks: the basic block must be present; block_size 512..page size",
      "  and not above physical_block_size; max_io (max_sectors) within the device's max_io_buf_bytes;",
      "  discard needs discard_granularity and single-segment discards; dev_t is read-only;",
      "  dma_alignment below the page size; seg_boundary a power of two >= 4096; max_segment_size >= 4096",
    }
    if c.opts then
      lines[#lines + 1] = ("! we sent: block_size %d, physical_block_size %d, max_io %d, size %d%s"):format(
        c.opts.block_size, c.opts.physical_block_size, c.opts.max_io, c.opts.size,
        c.opts.discard and (", discard_granularity %d"):format(c.opts.discard_granularity) or "")
    end
    return lines
  end,
  EACCES = function()
    return { "parameters can only be set before the device is started (the kernel refuses once it is live)" }
  end,
}

checks.GET_PARAMS = {
  EINVAL = function(c)
    return { ("the kernel needs header.len > 8 and params.len <= header.len: we sent len %s"):format(tostring(c.header and c.header.len)) }
  end,
}

checks.GET_QUEUE_AFFINITY = {
  EINVAL = function(c)
    return { ("the queue number (data[0] = %s) must be below the device's queue count, and the buffer a " ..
      "multiple of 8 bytes covering every CPU"):format(tostring(c.header and c.header.data)) }
  end,
}

checks.GET_FEATURES = {
  EINVAL = function() return { "header.len must be exactly 8 (UBLK_FEATURES_LEN)" } end,
  EOPNOTSUPP = function() return { "this kernel predates GET_FEATURES (added in Linux 6.5): its ublk driver knows only the legacy opcodes" } end,
}

checks.GET_DEV_INFO2 = {
  EINVAL = function() return { "GET_DEV_INFO2 needs the /dev/ublkcN path before the buffer (dev_path_len) and len >= path + 64" } end,
  EPERM = function() return { "the path sent with GET_DEV_INFO2 is not this device's /dev/ublkcN, or the caller lacks CAP_SYS_ADMIN" } end,
  ENOENT = function(c) return { ("%s does not exist: the device node was not created (udev?)"):format(c.dev_path or "/dev/ublkcN") } end,
}

checks.START_DEV = {
  EINVAL = function() return { "START_DEV needs SET_PARAMS to have succeeded and data[0] to be the pid of the process serving /dev/ublkcN" } end,
  EEXIST = function() return { "the device is already started" } end,
}

checks.DEL_DEV = {
  EINTR = function() return { "DEL_DEV waits until every user of /dev/ublkcN has closed it; a signal interrupted the wait (the device is being deleted)" } end,
}

--- Explain a refusal. `c` = { command =, dev_id =, header =, info =, opts =, dev_path = }.
-- @return the message: "<COMMAND> (device N) failed: <strerror> (-ENAME, errno N)" then the kernel's checks.
function M.explain(c, errno)
  local name = M.name(errno)
  local who = (c.dev_id and c.dev_id ~= 0xffffffff) and (" (device %d)"):format(c.dev_id) or ""
  local head = ("%s%s failed: %s (-%s, errno %d)"):format(c.command, who, core.strerror(errno), name, errno)
  local f = (checks[c.command] or {})[name] or common[name]
  if not f then return head end
  local lines = f(c)
  if #lines == 0 then return head end
  if #lines == 1 then return head .. ": " .. lines[1]:gsub("^[!%s]+", "") end
  return head .. "; the kernel refuses when (! marks what we sent that fails the check):\n  " .. table.concat(lines, "\n  ")
end

return M
