--- Device options: the plain keys of `ublk.new`, checked against the kernel's own rules before
-- anything is sent, and converted to and from `struct ublksrv_ctrl_dev_info` and `struct ublk_params`.
--
-- Every size is in bytes. A key this module does not know is an error, not ignored.
-- @module ublk.params
local core = require("ublk.core")

local C = core.const
local M = {}

local KiB, MiB = 1024, 1024 * 1024

-- feature bit by name (UBLK_F_<NAME> lower-cased), from the C table
local flag_bit = {}
for bit = 0, #core.flag_names do flag_bit[core.flag_names[bit]] = bit end

--- Parse "512", "4k", "64M", "1G" (powers of 1024) into an integer number of bytes.
-- @return bytes, or nil and a message
function M.parse_size(text)
  if math.type(text) == "integer" then return text end
  if math.type(text) == "float" then
    local i = math.tointeger(text)
    if i then return i end
    return nil, ("%s is not a whole number of bytes"):format(text)
  end
  if type(text) ~= "string" then return nil, ("expected a size, got %s"):format(type(text)) end
  local num, unit = text:match("^%s*(%d+)%s*([kKmMgGtT]?)i?[bB]?%s*$")
  if not num then return nil, ("'%s' is not a size (examples: 4096, 512K, 64M, 1G)"):format(text) end
  local scale = ({ [""] = 1, k = KiB, m = MiB, g = 1024 * MiB, t = 1024 * 1024 * MiB })[unit:lower()]
  return math.tointeger(tonumber(num) * scale)
end

local function is_pow2(n) return n > 0 and n & (n - 1) == 0 end
local function log2(n) local s = 0; while n > 1 do n = n >> 1; s = s + 1 end; return s end

local function human(n)
  if n >= MiB and n % MiB == 0 then return ("%d MiB"):format(n // MiB) end
  if n >= KiB and n % KiB == 0 then return ("%d KiB"):format(n // KiB) end
  return tostring(n)
end
M.human = human

local function fail(key, value, rule)
  error(("ublk.new: %s = %s: %s"):format(key, tostring(value), rule), 0)
end

local function want_integer(key, v)
  local n, err = M.parse_size(v)
  if not n then fail(key, v, "expected a whole number of bytes (" .. err .. ")") end
  return n
end

local function want_range(key, v, lo, hi, what)
  local n = want_integer(key, v)
  if n < lo or n > hi then
    fail(key, v, ("must be %s from %s to %s"):format(what or "a whole number", lo, hi))
  end
  return n
end

local function want_pow2(key, v, lo, hi, why)
  local n = want_integer(key, v)
  if not is_pow2(n) or n < lo or n > hi then
    fail(key, v, ("must be a power of two from %s to %s%s"):format(human(lo), human(hi), why or ""))
  end
  return n
end

local function want_bool(key, v)
  if type(v) ~= "boolean" then fail(key, v, "must be true or false") end
  return v
end

--- The keys `ublk.new` takes, with what each means, in the order the README and the specs list them.
M.keys = {
  { "size", "device size in bytes (a multiple of block_size)" },
  { "queues", "hardware queues, 1.." .. C.MAX_NR_QUEUES .. " (the kernel caps it at the CPU count)" },
  { "depth", "requests in flight per queue, 1.." .. C.MAX_QUEUE_DEPTH },
  { "id", "device number, or nil to let the kernel choose" },
  { "max_io", "largest request in bytes, page size .. 32 MiB, a multiple of the page size" },
  { "block_size", "logical block size: power of two, 512 .. page size" },
  { "physical_block_size", "power of two, block_size .. 1 MiB" },
  { "io_min", "minimum I/O the device prefers: power of two, block_size .. 1 MiB" },
  { "io_opt", "optimal I/O: power of two, block_size .. 32 MiB" },
  { "chunk_size", "0, or a power of two >= block_size: requests never cross it" },
  { "virt_boundary", "0, or a power of two 512 .. page size: segment boundary for gaps" },
  { "read_only", "boolean" },
  { "rotational", "boolean" },
  { "volatile_cache", "boolean: the device has a write cache (flush is sent)" },
  { "fua", "boolean: the device honours FUA writes" },
  { "discard", "boolean: send DISCARD/WRITE_ZEROES (enables the discard block)" },
  { "discard_granularity", "bytes, a power of two >= block_size" },
  { "discard_alignment", "bytes, a multiple of block_size below discard_granularity" },
  { "max_discard", "bytes per DISCARD, a multiple of 512 (0: none)" },
  { "max_write_zeroes", "bytes per WRITE_ZEROES, a multiple of 512 (0: none)" },
  { "max_discard_segments", "must be 1: ublk takes single-range discards only" },
  { "dma_alignment", "power of two 1 .. page size/2: buffer address alignment" },
  { "seg_boundary", "a power of two >= 4096: segments never cross it" },
  { "max_segment_size", "bytes, 4096 .. 2^32 - 1" },
  { "max_segments", "1 .. 65535" },
  { "recovery", "what a device does while no server runs: 'requeue', 'fail_in_flight' or 'fail_io' " ..
    "(default nil: it dies with its server)" },
  { "flags", "list of ublk feature names to request, e.g. {'user_copy'}" },
}

--- The recovery modes: the flags each asks for, and the first Linux release whose ublk driver has them.
-- requeue: requests in flight go to the next server, new ones wait for it; fail_in_flight: those in
-- flight fail (EIO), new ones wait; fail_io: every request fails until a new server comes.
M.recovery_modes = {
  requeue = { flags = { "user_recovery", "user_recovery_reissue" }, linux = "6.1" },
  fail_in_flight = { flags = { "user_recovery" }, linux = "6.1" },
  fail_io = { flags = { "user_recovery", "user_recovery_fail_io" }, linux = "6.13" },
}
local recovery_flag = { user_recovery = true, user_recovery_reissue = true, user_recovery_fail_io = true }
--- The flags a recovery mode stands for (dev:params() gives the mode instead).
M.recovery_flags = recovery_flag

--- The recovery mode a device's flag names give (nil: none).
function M.recovery_of(names)
  local set = {}
  for _, n in ipairs(names) do set[n] = true end
  if not set.user_recovery then return nil end
  if set.user_recovery_reissue then return "requeue" end
  if set.user_recovery_fail_io then return "fail_io" end
  return "fail_in_flight"
end
local known = {}
for _, k in ipairs(M.keys) do known[k[1]] = true end

local function allowed_keys(others)
  local names = {}
  for _, k in ipairs(M.keys) do names[#names + 1] = k[1] end
  for _, k in ipairs(others or {}) do names[#names + 1] = k end
  return table.concat(names, ", ")
end

--- Check every option and fill the defaults. Raises a Lua error naming the key, the value and the
-- allowed range. `features` (optional) is the kernel's GET_FEATURES mask: a flag it lacks is refused.
-- `others` (optional) names the options ublk.new takes besides these (the target's), for the
-- message about an unknown one.
-- @treturn table the normalised options
function M.check(opts, features, others)
  if type(opts) ~= "table" then error("ublk.new: expected a table of options, got " .. type(opts), 0) end
  for k in pairs(opts) do
    if not known[k] then
      error(("ublk.new: unknown option '%s' (known: %s)"):format(tostring(k), allowed_keys(others)), 0)
    end
  end
  local page = C.PAGE_SIZE
  local o = {}
  o.queues = want_range("queues", opts.queues or 1, 1, C.MAX_NR_QUEUES)
  o.depth = want_range("depth", opts.depth or 128, 1, C.MAX_QUEUE_DEPTH)
  if opts.id ~= nil then o.id = want_range("id", opts.id, 0, (1 << 20) - 1, "a device number") end
  o.block_size = want_pow2("block_size", opts.block_size or 512, 512, page, " (the page size)")
  local bs = o.block_size
  o.max_io = want_integer("max_io", opts.max_io or 512 * KiB)
  if o.max_io < page or o.max_io > C.MAX_IO_BUF_BYTES or o.max_io % page ~= 0 then
    fail("max_io", opts.max_io, ("must be a multiple of the page size (%d) from %s to %s"):format(
      page, human(page), human(C.MAX_IO_BUF_BYTES)))
  end
  if opts.size == nil then error("ublk.new: size is required (bytes, a multiple of block_size)", 0) end
  o.size = want_integer("size", opts.size)
  if o.size < bs or o.size % bs ~= 0 then
    fail("size", opts.size, ("must be a positive multiple of block_size (%d)"):format(bs))
  end
  o.physical_block_size = want_pow2("physical_block_size", opts.physical_block_size or math.max(bs, 4096),
    bs, MiB, " (at least block_size)")
  o.io_min = want_pow2("io_min", opts.io_min or bs, bs, MiB, " (at least block_size)")
  o.io_opt = want_pow2("io_opt", opts.io_opt or o.physical_block_size, bs, 32 * MiB, " (at least block_size)")
  o.chunk_size = want_integer("chunk_size", opts.chunk_size or 0)
  if o.chunk_size ~= 0 and (not is_pow2(o.chunk_size) or o.chunk_size < bs or o.chunk_size >= 1 << 41) then
    fail("chunk_size", opts.chunk_size, "must be 0 or a power of two from block_size to 1 TiB")
  end
  o.virt_boundary = want_integer("virt_boundary", opts.virt_boundary or 0)
  if o.virt_boundary ~= 0 and (not is_pow2(o.virt_boundary) or o.virt_boundary < 512 or o.virt_boundary > page) then
    fail("virt_boundary", opts.virt_boundary, ("must be 0 or a power of two from 512 to %d (the page size)"):format(page))
  end
  for _, k in ipairs { "read_only", "rotational", "volatile_cache", "fua" } do
    o[k] = opts[k] ~= nil and want_bool(k, opts[k])
  end
  if o.fua and not o.volatile_cache then
    fail("fua", true, "needs volatile_cache = true (FUA only means something with a write cache)")
  end

  local any_discard = opts.discard_granularity or opts.discard_alignment or opts.max_discard
    or opts.max_write_zeroes or opts.max_discard_segments
  if opts.discard == nil then o.discard = any_discard ~= nil else o.discard = want_bool("discard", opts.discard) end
  if o.discard then
    o.discard_granularity = want_pow2("discard_granularity", opts.discard_granularity or math.max(bs, 4096),
      bs, 1 << 31, " (at least block_size)")
    o.discard_alignment = want_integer("discard_alignment", opts.discard_alignment or 0)
    if o.discard_alignment % bs ~= 0 or o.discard_alignment >= o.discard_granularity then
      fail("discard_alignment", opts.discard_alignment, "must be a multiple of block_size below discard_granularity")
    end
    local max_sectors_bytes = 0xffffffff * 512
    o.max_discard = want_integer("max_discard", opts.max_discard or o.size)
    o.max_write_zeroes = want_integer("max_write_zeroes", opts.max_write_zeroes or o.max_discard)
    for _, k in ipairs { "max_discard", "max_write_zeroes" } do
      o[k] = math.min(o[k], max_sectors_bytes - max_sectors_bytes % 512)
      if o[k] < 0 or o[k] % 512 ~= 0 then fail(k, opts[k], "must be a multiple of 512 bytes (0: not sent)") end
    end
    o.max_discard_segments = want_range("max_discard_segments", opts.max_discard_segments or 1, 1, 1,
      "1 (the kernel takes single-range discards only):")
  elseif any_discard then
    fail("discard", false, "is false but discard limits were given")
  end

  if opts.dma_alignment ~= nil then
    o.dma_alignment = want_pow2("dma_alignment", opts.dma_alignment, 1, page // 2, " (below the page size)")
  end
  local any_seg = opts.seg_boundary or opts.max_segment_size or opts.max_segments
  if any_seg then
    if o.virt_boundary ~= 0 then
      fail("virt_boundary", o.virt_boundary, "cannot be combined with seg_boundary/max_segment_size/max_segments")
    end
    o.seg_boundary = want_integer("seg_boundary", opts.seg_boundary or 1 << 32)
    if not is_pow2(o.seg_boundary) or o.seg_boundary < C.MIN_SEGMENT_SIZE then
      fail("seg_boundary", opts.seg_boundary, "must be a power of two of at least 4096 bytes")
    end
    o.max_segment_size = want_range("max_segment_size", opts.max_segment_size or 0xffffffff,
      C.MIN_SEGMENT_SIZE, 0xffffffff)
    o.max_segments = want_range("max_segments", opts.max_segments or 0xffff, 1, 0xffff)
  end

  o.flags = {}
  if opts.flags ~= nil then
    if type(opts.flags) ~= "table" then fail("flags", opts.flags, "must be a list of feature names") end
    for _, name in ipairs(opts.flags) do
      local bit = flag_bit[name]
      if not bit then fail("flags", name, "is not a ublk feature (see `ublk features`)") end
      if features and features & (1 << bit) == 0 then
        fail("flags", name, "is not supported by the running kernel (see `ublk features`)")
      end
      o.flags[#o.flags + 1] = name
    end
  end
  if opts.recovery ~= nil then
    local mode = M.recovery_modes[opts.recovery]
    if not mode then fail("recovery", opts.recovery, "must be 'requeue', 'fail_in_flight' or 'fail_io' (or nil: none)") end
    for _, name in ipairs(o.flags) do
      if recovery_flag[name] then fail("flags", name, "comes with recovery = '" .. opts.recovery .. "': give the mode, not the flag") end
    end
    for _, name in ipairs(mode.flags) do
      if features and features & (1 << flag_bit[name]) == 0 then
        fail("recovery", opts.recovery, ("needs UBLK_F_%s, which the running kernel's ublk driver lacks (Linux %s brings it)"):format(
          name:upper(), mode.linux))
      end
      o.flags[#o.flags + 1] = name
    end
    -- QUIESCE_DEV, where the kernel has it, lets a live server hand the device over (dev:handover())
    local has_quiesce = false
    for _, name in ipairs(o.flags) do has_quiesce = has_quiesce or name == "quiesce" end
    if not has_quiesce and features and features & (1 << flag_bit.quiesce) ~= 0 then o.flags[#o.flags + 1] = "quiesce" end
    o.recovery = opts.recovery
  end
  return o
end

--- The flags mask of a list of names.
function M.flags_mask(names)
  local mask = 0
  for _, n in ipairs(names or {}) do mask = mask | (1 << flag_bit[n]) end
  return mask
end

--- The names of the bits set in a flags mask (unknown bits as "bit<N>").
function M.flag_names(mask)
  local names = {}
  for bit = 0, 63 do
    if mask & (1 << bit) ~= 0 then names[#names + 1] = core.flag_names[bit] or ("bit" .. bit) end
  end
  return names
end

--- `struct ublksrv_ctrl_dev_info` for ADD_DEV.
function M.dev_info(o)
  return core.pack("dev_info", {
    nr_hw_queues = o.queues, queue_depth = o.depth, max_io_buf_bytes = o.max_io,
    dev_id = o.id or 0xffffffff, ublksrv_pid = o.pid or 0, flags = M.flags_mask(o.flags),
  })
end

--- `struct ublk_params` for SET_PARAMS.
function M.encode(o)
  local attrs = (o.read_only and C.ATTR_READ_ONLY or 0) | (o.rotational and C.ATTR_ROTATIONAL or 0)
    | (o.volatile_cache and C.ATTR_VOLATILE_CACHE or 0) | (o.fua and C.ATTR_FUA or 0)
  local t = {
    len = core.layout("params").size,
    types = C.PARAM_TYPE_BASIC,
    ["basic.attrs"] = attrs,
    ["basic.logical_bs_shift"] = log2(o.block_size),
    ["basic.physical_bs_shift"] = log2(o.physical_block_size),
    ["basic.io_min_shift"] = log2(o.io_min),
    ["basic.io_opt_shift"] = log2(o.io_opt),
    ["basic.max_sectors"] = o.max_io >> 9,
    ["basic.chunk_sectors"] = o.chunk_size >> 9,
    ["basic.dev_sectors"] = o.size >> 9,
    ["basic.virt_boundary_mask"] = o.virt_boundary ~= 0 and o.virt_boundary - 1 or 0,
  }
  if o.discard then
    t.types = t.types | C.PARAM_TYPE_DISCARD
    t["discard.discard_granularity"] = o.discard_granularity
    t["discard.discard_alignment"] = o.discard_alignment
    t["discard.max_discard_sectors"] = o.max_discard >> 9
    t["discard.max_write_zeroes_sectors"] = o.max_write_zeroes >> 9
    t["discard.max_discard_segments"] = o.max_discard_segments
  end
  if o.dma_alignment then
    t.types = t.types | C.PARAM_TYPE_DMA_ALIGN
    t["dma.alignment"] = o.dma_alignment - 1
  end
  if o.seg_boundary then
    t.types = t.types | C.PARAM_TYPE_SEGMENT
    t["seg.seg_boundary_mask"] = o.seg_boundary - 1
    t["seg.max_segment_size"] = o.max_segment_size
    t["seg.max_segments"] = o.max_segments
  end
  return core.pack("params", t)
end

--- Decode GET_PARAMS back into the keys `ublk.new` takes; `info` (dev:info()) adds queues, depth, id, max_io.
function M.decode(bytes, info)
  local p = core.unpack("params", bytes)
  local types, attrs = p.types, p["basic.attrs"]
  local o = {}
  if info then o.queues, o.depth, o.id, o.max_io = info.queues, info.depth, info.id, info.max_io end
  if types & C.PARAM_TYPE_BASIC ~= 0 then
    o.size = p["basic.dev_sectors"] << 9
    o.block_size = 1 << p["basic.logical_bs_shift"]
    o.physical_block_size = 1 << p["basic.physical_bs_shift"]
    o.io_min = 1 << p["basic.io_min_shift"]
    o.io_opt = 1 << p["basic.io_opt_shift"]
    o.max_io = o.max_io or p["basic.max_sectors"] << 9
    o.chunk_size = p["basic.chunk_sectors"] << 9
    local vb = p["basic.virt_boundary_mask"]
    o.virt_boundary = vb ~= 0 and vb + 1 or 0
    o.read_only = attrs & C.ATTR_READ_ONLY ~= 0
    o.rotational = attrs & C.ATTR_ROTATIONAL ~= 0
    o.volatile_cache = attrs & C.ATTR_VOLATILE_CACHE ~= 0
    o.fua = attrs & C.ATTR_FUA ~= 0
  end
  o.discard = types & C.PARAM_TYPE_DISCARD ~= 0
  if o.discard then
    o.discard_granularity = p["discard.discard_granularity"]
    o.discard_alignment = p["discard.discard_alignment"]
    o.max_discard = p["discard.max_discard_sectors"] << 9
    o.max_write_zeroes = p["discard.max_write_zeroes_sectors"] << 9
    o.max_discard_segments = p["discard.max_discard_segments"]
  end
  if types & C.PARAM_TYPE_DMA_ALIGN ~= 0 then o.dma_alignment = p["dma.alignment"] + 1 end
  if types & C.PARAM_TYPE_SEGMENT ~= 0 then
    o.seg_boundary = p["seg.seg_boundary_mask"] + 1
    o.max_segment_size = p["seg.max_segment_size"]
    o.max_segments = p["seg.max_segments"]
  end
  local devt
  if types & C.PARAM_TYPE_DEVT ~= 0 then
    devt = { char_major = p["devt.char_major"], char_minor = p["devt.char_minor"],
             disk_major = p["devt.disk_major"], disk_minor = p["devt.disk_minor"] }
  end
  return o, devt, p
end

return M
