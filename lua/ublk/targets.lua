--- The C targets (`null`, `ram`, `file`): their options, checked before anything reaches the kernel,
-- and the device parameters each implies (what it can serve is what the kernel is told to send).
-- @module ublk.targets
local core = require("ublk.core")
local params = require("ublk.params")

local M = {}

--- Options that belong to the target, not to the device parameters.
M.keys = {
  { "target", "'null', 'ram' or 'file': the C target that serves the device" },
  { "path", "file: the backing regular file or block device (created sparse when missing and size is given)" },
  { "direct", "file: O_DIRECT (default: true where the backing store takes it)" },
  { "offset", "file: where the device starts in the backing file, in bytes (default 0)" },
  { "handler", "a table of Lua functions by op (read, write, flush, discard, write_zeroes): the device is written in Lua" },
  { "hooks", "a table of Lua functions by op on a C target: those ops go to Lua first" },
  { "log", "a function(line) for handler failures (default: stderr)" },
  { "queue_threads", "handler or hooks: true gives each queue a thread of its own (the C work runs there, " ..
    "the Lua work is handed to the Lua thread); default false: Lua-owned rings (the Lua thread serves every queue's ring itself)" },
}
local own = {}
--- The names of M.keys, for the message about an unknown option (params.check).
M.key_names = {}
for _, k in ipairs(M.keys) do
  own[k[1]] = true
  M.key_names[#M.key_names + 1] = k[1]
end

M.names = { "null", "ram", "file" }
local known = { null = true, ram = true, file = true }

local RAM_MAX = 1 << 46 -- 64 TiB: the ram target's page directory stays small

local function fail(key, value, rule)
  local shown = type(value) == "function" and "a function" or type(value) == "table" and "a table" or tostring(value)
  error(("ublk.new: %s = %s: %s"):format(key, shown, rule), 0)
end

--- Split `opts` into device options (for params.check) and the target's own, with the target's
-- defaults filled in. Raises on bad input; returns nil, msg, errno when the OS refuses (a backing file
-- that cannot be opened or created).
-- @return device_opts, target (or nil when no target was named)
function M.prepare(opts)
  if type(opts) ~= "table" then error("ublk.new: expected a table of options, got " .. type(opts), 0) end
  local dev, tgt = {}, {}
  for k, v in pairs(opts) do
    if own[k] then tgt[k] = v else dev[k] = v end
  end
  if tgt.log ~= nil and type(tgt.log) ~= "function" then fail("log", tgt.log, "must be a function(line)") end
  if tgt.log ~= nil and tgt.handler == nil and tgt.hooks == nil then
    fail("log", tgt.log, "logs failing handlers and hooks: give handler = {...} or hooks = {...} with it")
  end
  if tgt.queue_threads ~= nil and type(tgt.queue_threads) ~= "boolean" then
    fail("queue_threads", tgt.queue_threads, "must be true or false")
  end
  if tgt.handler ~= nil then return M.prepare_handler(dev, tgt) end
  if tgt.queue_threads ~= nil and tgt.hooks == nil then
    fail("queue_threads", tgt.queue_threads, "only a device with Lua in its path (handler = {...} or hooks " ..
      "= {...}) takes it: C targets without hooks always have queue threads")
  end
  local name = tgt.target
  if tgt.hooks ~= nil then
    if name == nil then fail("hooks", tgt.hooks, "hook a C target: give target = 'null', 'ram' or 'file' (or write the device with handler = {...})") end
    M.check_ops("hooks", tgt.hooks)
  end
  if name == nil then
    for k in pairs(tgt) do fail(k, tgt[k], "needs target = 'file'") end
    return dev, nil
  end
  if not known[name] then fail("target", name, "must be one of " .. table.concat(M.names, ", ")) end
  if name ~= "file" then
    for _, k in ipairs { "path", "direct", "offset" } do
      if tgt[k] ~= nil then fail(k, tgt[k], "only the file target takes it (target = '" .. name .. "')") end
    end
  end
  local t = { target = name, hooks = tgt.hooks, log = tgt.log, queue_threads = tgt.queue_threads }
  if t.queue_threads == nil and tgt.hooks ~= nil then t.queue_threads = false end
  if name == "null" then
    if dev.discard == nil and dev.max_discard == nil then dev.discard = true end
  elseif name == "ram" then
    if dev.recovery ~= nil then
      fail("recovery", dev.recovery, "the ram target keeps its data in the server's memory, which dies with it " ..
        "(a new server would serve zeros): use target = 'file'")
    end
    if dev.discard == nil and dev.max_discard == nil then dev.discard = true end
    local size = dev.size and params.parse_size(dev.size)
    if size and size > RAM_MAX then fail("size", dev.size, "the ram target holds at most 64 TiB") end
  else
    local ok, err = M.prepare_file(dev, tgt, t)
    if not ok then return nil, err, t.errno end
  end
  return dev, t
end

local ops = { read = true, write = true, flush = true, discard = true, write_zeroes = true }

--- A table of functions by op name, nothing else.
function M.check_ops(key, t)
  if type(t) ~= "table" then fail(key, t, "must be a table of functions by op (read, write, flush, discard, write_zeroes)") end
  local any = false
  for k, f in pairs(t) do
    if not ops[k] then
      fail(key .. "." .. tostring(k), f, "is not an op: use read, write, flush, discard or write_zeroes")
    end
    if type(f) ~= "function" then fail(key .. "." .. k, f, "must be a function(req)") end
    any = true
  end
  if not any then fail(key, "{}", "names no op") end
end

--- A device written in Lua: the ops its handler table names are what the kernel is told it may
-- send (no flush: no volatile cache; no discard or write_zeroes: no discard limits; no write:
-- read-only). Options that promise more than the table serves are refused.
function M.prepare_handler(dev, tgt)
  local h = tgt.handler
  if tgt.target ~= nil then
    fail("target", tgt.target, "is not taken with handler: a handler device is served by its Lua functions (to run Lua before a C target, use hooks)")
  end
  if tgt.hooks ~= nil then fail("hooks", tgt.hooks, "is not taken with handler (the handler already sees every request)") end
  for _, k in ipairs { "path", "direct", "offset" } do
    if tgt[k] ~= nil then fail(k, tgt[k], "only the file target takes it") end
  end
  M.check_ops("handler", h)
  if not h.read then fail("handler.read", nil, "is required: a block device must answer reads") end
  local function needs(key, op)
    if dev[key] then fail(key, dev[key], ("needs handler.%s, which the handler table lacks"):format(op)) end
  end
  if not h.write then
    if dev.read_only == false then fail("read_only", false, "needs handler.write, which the handler table lacks") end
    dev.read_only = true
  end
  if h.flush then
    if dev.volatile_cache == nil then dev.volatile_cache = true end
  else
    needs("volatile_cache", "flush")
    needs("fua", "flush")
  end
  if h.discard or h.write_zeroes then
    if dev.discard == nil then dev.discard = true end
    if dev.discard then
      local size = params.parse_size(dev.size or 0) or 0
      if not h.discard then needs("max_discard", "discard"); dev.max_discard = 0 end
      if not h.write_zeroes then needs("max_write_zeroes", "write_zeroes"); dev.max_write_zeroes = 0 end
      if h.write_zeroes and dev.max_write_zeroes == nil then dev.max_write_zeroes = size end
    end
  else
    needs("discard", "discard")
    needs("max_discard", "discard")
    needs("max_write_zeroes", "write_zeroes")
  end
  return dev, { target = "lua", handler = h, log = tgt.log, queue_threads = tgt.queue_threads or false }
end

--- The file target: probe the backing store, create it when missing and a size is given, and derive
-- size, block size, direct I/O, read-only, cache and discard from it.
function M.prepare_file(dev, tgt, t)
  local path = tgt.path
  if type(path) ~= "string" or path == "" then fail("path", path, "the file target needs the path of a file or block device") end
  t.path = path
  local offset = params.parse_size(tgt.offset or 0)
  if not offset or offset < 0 or offset % 512 ~= 0 then fail("offset", tgt.offset, "must be a multiple of 512 bytes") end
  t.offset = offset
  local probe, msg, errno = core.probe_backing(path)
  if not probe and errno == core.errno.ENOENT and dev.size ~= nil then
    local size = params.parse_size(dev.size)
    if not size then fail("size", dev.size, "expected a whole number of bytes") end
    params.check(dev, nil, M.key_names) -- misuse raises before the file exists, not after
    local ok, m2, e2 = core.create_file(path, offset + size)
    if not ok then t.errno = e2; return nil, "file target: creating " .. m2 end
    probe, msg, errno = core.probe_backing(path)
  end
  if not probe then
    t.errno = errno
    return nil, ("file target: %s%s"):format(msg, errno == core.errno.ENOENT and " (give size to create it)" or "")
  end
  local room = probe.size - offset
  if dev.size == nil then
    local bs = params.parse_size(dev.block_size or 512) or 512
    dev.size = room - room % math.max(bs, 512)
    if dev.size <= 0 then
      fail("path", path, ("is empty past offset %d: give size to use it (%d bytes there)"):format(offset, probe.size))
    end
  else
    local size = params.parse_size(dev.size)
    if size and size > room then
      fail("size", dev.size, ("must be at most %d bytes, what %s holds past offset %d"):format(room, path, offset))
    end
  end
  if tgt.direct == nil then
    t.direct = probe.direct
  elseif type(tgt.direct) ~= "boolean" then
    fail("direct", tgt.direct, "must be true or false")
  else
    t.direct = tgt.direct
    if t.direct and not probe.direct then fail("direct", true, path .. " does not take O_DIRECT (its file system refuses it)") end
  end
  if t.direct then
    -- O_DIRECT needs requests aligned to the backing store's logical blocks
    local need = math.max(probe.logical_block_size, 512)
    if dev.block_size == nil then
      dev.block_size = need
    elseif (params.parse_size(dev.block_size) or 0) < need then
      fail("block_size", dev.block_size, ("must be at least %d, the logical block size of %s (O_DIRECT)"):format(need, path))
    end
    if offset % need ~= 0 then fail("offset", offset, ("must be a multiple of %d for O_DIRECT"):format(need)) end
  end
  if dev.read_only == nil then
    dev.read_only = not probe.writable
  elseif dev.read_only == false and not probe.writable then
    fail("read_only", false, path .. " is not writable by this process")
  end
  if dev.volatile_cache == nil then dev.volatile_cache = true end
  if dev.fua == nil then dev.fua = dev.volatile_cache end
  if dev.discard == nil and dev.max_discard == nil and not dev.read_only then
    dev.discard = probe.kind == "file" or probe.discard
  end
  t.kind = probe.kind
  return true
end

return M
