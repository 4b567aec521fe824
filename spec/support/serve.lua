-- For kernel specs whose device is served by this very Lua thread (a handler or hooks): the commands
-- that use it run in the background (support.job) while the spec dispatches. A device served for the
-- duration of a block, a disk in a Lua table, and waits on something observable that fail loudly,
-- saying what did not happen, instead of fixed sleeps.
local luassert = require("luassert")
local kernel = require("support.kernel")
local job = require("support.job")
local disk = require("support.disk")
local run = require("support.run")
local ublk = require("ublk")
local core = ublk.core

local M = {}

local DELETED = "ublk.device (deleted)"

--- Whether the device object still owns a kernel device (public: what tostring says).
function M.live(dev)
  return tostring(dev) ~= DELETED
end

-- The device object no longer owns a kernel device.
local function assert_deleted(dev)
  luassert.are.equal(DELETED, tostring(dev))
end

-- What a spec file counts before its first device (after ublk.features(), whose shared control
-- handle stays open).
local function baseline()
  assert(ublk.features())
  collectgarbage()
  return { fds = kernel.fd_count(), threads = (kernel.threads()) }
end

-- after_each: whatever a failed spec left behind goes, so that the next one starts clean.
local function delete_leftovers()
  collectgarbage()
  for _, name in ipairs(kernel.ublk_devices()) do ublk.delete(tonumber(name:match("%d+"))) end
end

--- Called in a spec file's outermost describe: count descriptors and threads before its first spec
-- (setup), and delete what a failed spec left after each. Returns the body of the file's last spec: no
-- descriptor, thread or ublk device is left over that count.
function M.track()
  local busted = require("busted")
  local base
  busted.setup(function() base = baseline() end)
  busted.after_each(delete_leftovers)
  return function() kernel.assert_nothing_left(base.fds, base.threads) end
end

local function with_traceback(e)
  return type(e) == "string" and debug.traceback(e, 2) or e
end

--- Serve a device for the duration of fn: ublk.new(opts), dev:start(), fn(dev). Afterwards, whether
-- fn returned or raised, dev:delete() (which stops it first; nothing if fn deleted it already), and
-- no device is left that was not there before. Returns what fn returned; re-raises what it raised.
function M.device(opts, fn)
  local before = kernel.ublk_devices()
  local dev = assert(ublk.new(opts))
  local res = table.pack(xpcall(function()
    assert(dev:start())
    return fn(dev)
  end, with_traceback))
  local deleted, msg = dev:delete()
  if not res[1] then error(res[2], 0) end
  assert(deleted, msg)
  assert_deleted(dev)
  luassert.are.same(before, kernel.ublk_devices(), "a device is left after the block")
  return table.unpack(res, 2, res.n)
end

-- The level for error() that names the spec's line, not this file's: the first caller outside it.
local HERE = debug.getinfo(1, "S").source
local function spec_level()
  local level = 3 -- the caller of the function that calls spec_level
  while true do
    local info = debug.getinfo(level, "S")
    if not info or info.source ~= HERE then return level - 1 end
    level = level + 1
  end
end

--- Wait until cond() returns a true value (which it returns), calling tick() between tries (default:
-- a 20 ms sleep, without dispatching); raises "... did not happen within N s: <what>" after
-- `timeout` seconds (default 30).
function M.wait_until(cond, what, timeout, tick)
  timeout = timeout or 30
  local deadline = core.monotonic() + timeout
  tick = tick or function() core.sleep(0.02) end
  while true do
    local v = cond()
    if v then return v end
    if core.monotonic() > deadline then
      error(("did not happen within %g s: %s"):format(timeout, what), spec_level())
    end
    tick()
  end
end

--- M.wait_until, dispatching dev meanwhile.
function M.dispatch_until(dev, cond, what, timeout)
  return M.wait_until(cond, what, timeout, function() dev:dispatch(0.02) end)
end

--- cond() stays true for `seconds` (checked every 20 ms); raises at once when it does not: for
-- what must not happen (a request nobody may serve yet), which no event can show.
function M.holds(cond, seconds, what)
  local deadline = core.monotonic() + seconds
  repeat
    if not cond() then error("did not hold for " .. seconds .. " s: " .. what, spec_level()) end
    core.sleep(0.02)
  until core.monotonic() > deadline
  if not cond() then error("did not hold for " .. seconds .. " s: " .. what, spec_level()) end
end

--- Whether dev:fd() polls readable (now, or within `timeout` seconds): the device has Lua work
-- (requests, a timer that is due, a descriptor that is ready).
function M.has_work(dev, timeout)
  return core.poll(timeout or 0, dev:fd(), 1) & 1 == 1
end

--- Dispatch until the device has no Lua work left: dev:fd() does not poll readable, not even 50 ms
-- later (a timer just armed for now would be due by then). What is ready has run; what waits, waits.
function M.dispatch_until_idle(dev, what)
  M.dispatch_until(dev, function() return not M.has_work(dev, 0.05) end, "the device had no Lua work left (" .. what .. ")")
end

--- A shell command that is not ours, run while this thread serves dev: status, stdout, stderr.
function M.serving(dev, cmd, timeout)
  local j = job.start(cmd)
  local code, out, err = j:wait(timeout or 120, function() dev:dispatch(0.02) end)
  j:cleanup()
  return code, out, err
end

--- M.serving, which must succeed: its stdout.
function M.ok_serving(dev, cmd, timeout)
  return disk.succeeded(cmd, M.serving(dev, cmd, timeout))
end

--- A disk in a Lua table of 512-byte sectors: any size and alignment the kernel sends. The handler
-- table (read, write), and the sectors.
function M.sector_store()
  local sectors = {}
  local h = {}
  function h.read(req)
    local buf, first = req.buf, req.offset // 512
    for i = 0, req.length // 512 - 1 do
      local s = sectors[first + i]
      if s then buf:write(i * 512, s) else buf:fill(0, i * 512, 512) end
    end
  end
  function h.write(req)
    local buf, first = req.buf, req.offset // 512
    for i = 0, req.length // 512 - 1 do sectors[first + i] = buf:read(i * 512, 512) end
  end
  return h, sectors
end

--- The dd command that reads `bs` bytes (default 4096) at `offset`, with direct I/O; its messages on
-- stdout.
function M.dd_read(path, offset, bs)
  return ("dd if=%s bs=%d count=1 skip=%d iflag=direct,skip_bytes 2>&1 >/dev/null"):format(path, bs or 4096, offset)
end

--- One read served while dispatching, so that the node is there and a partition scan is done: what
-- the disk reads next is the spec's own.
function M.serve_one_read(dev)
  M.ok_serving(dev, "dd if=" .. dev.path .. " of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null")
end

--- The disk's requests in flight, as the block layer counts them: reads, writes.
function M.in_flight(dev)
  local r, w = run.slurp("/sys/block/" .. dev.path:match("[^/]+$") .. "/inflight"):match("^%s*(%d+)%s+(%d+)")
  return tonumber(r), tonumber(w)
end

--- Wait (without dispatching) until the disk counts `reads` reads in flight (default: at least 1),
-- and with `write` a write too.
function M.wait_in_flight(dev, write, reads)
  local function there()
    local r, w = M.in_flight(dev)
    return r >= (reads or 1) and (not write or w > 0)
  end
  M.wait_until(there, ("%s read%s%s in flight on %s"):format(reads or "a", (reads or 1) > 1 and "s" or "",
    write and " and a write" or "", dev.path))
  luassert.is_true(there(), "the read" .. (write and " and the write are" or " is") .. " in flight")
end

return M
