--- lua-ublk: Linux userspace block devices (ublk) from Lua 5.4.
--
--     local ublk = require("ublk")
--     local dev <close> = assert(ublk.new{ size = 64 * 2^20, queues = 2, depth = 64 })
--     print(dev.id, dev.char_path, dev:info().state)
--
-- Misuse and bad parameters raise a Lua error naming the key and the allowed range. When the kernel
-- or the OS refuses, functions return `nil, message, errno`; the message names the command, the
-- errno and the kernel's checks that can produce it.
-- @module ublk
local core = require("ublk.core")
local params = require("ublk.params")
local errors = require("ublk.errors")
local decode = require("ublk.decode")
local targets = require("ublk.targets")
local handler = require("ublk.handler")
local control = require("ublk.control")

local M = {
  version = "0.1.0",
  --- The raw C module, for tools and specs.
  core = core,
}

local state = control.state
local command = control.command

--- Print every control command, decoded, to stderr before and after the kernel sees it.
-- @function trace
-- @tparam boolean on
-- @param[opt] out a file to write to instead of io.stderr
M.trace = control.trace
M._command = command

--- The kernel's ublk features (GET_FEATURES).
-- @return { mask = n, names = {...}, ioctl_encode = bool, legacy_opcodes = bool } | nil, msg, errno
function M.features()
  local c, msg, errno = control.get()
  if not c then return nil, msg, errno end
  if not state.features then
    -- a driver that predates GET_FEATURES answers an unknown command: EINVAL, EOPNOTSUPP, or the
    -- kernel-internal ENOTSUPP (524); anything else is a refusal of its own (an LSM, the ring)
    local e = state.features_res and -state.features_res
    if e == core.errno.EINVAL or e == core.errno.EOPNOTSUPP or e == 524 then
      return nil, "GET_FEATURES failed: this kernel's ublk driver predates it (Linux < 6.5): features cannot be listed", core.errno.EOPNOTSUPP
    end
    return nil, ("GET_FEATURES failed: %s"):format(e and errors.name(e) or "the control ring failed"), e or core.errno.EIO
  end
  -- Legacy opcodes: a legacy GET_DEV_INFO for a device that cannot exist answers -ENODEV when the
  -- kernel takes legacy numbers, -EOPNOTSUPP when CONFIG_BLKDEV_UBLK_LEGACY_OPCODES is off.
  local res = c:command(core.commands.GET_DEV_INFO.nr, 0x7fffffff, 0xffff, 0, nil, 64)
  return {
    mask = state.features,
    names = params.flag_names(state.features),
    ioctl_encode = not state.legacy,
    legacy_opcodes = res == -core.errno.ENODEV,
  }
end

local Device = {}
local device_mt = core.device_mt
local methods = device_mt.methods

local function device_index(dev, key)
  local m = Device[key]
  if m ~= nil then return m end
  return dev:_data()[key]
end
device_mt.__index = device_index
device_mt.__name = "ublk.device"
device_mt.__tostring = function(dev)
  local id = dev:_owned()
  return id and ("ublk.device %d (%s)"):format(id, dev:_data().char_path) or "ublk.device (deleted)"
end
device_mt.__close = function(dev) dev:delete() end
for k, f in pairs(methods) do Device[k] = f end

-- This Lua state's devices by id, until deleted or collected: ublk.delete(id) of one of them deletes it
-- as dev:delete() does, serving its Lua side while the kernel waits (a plain DEL_DEV would wait for
-- requests that only this thread can answer).
local mine = setmetatable({}, { __mode = "v" })

-- The device with this id that this Lua state serves now, or nil (held while served, so the id
-- cannot have gone to another device).
local function served_here(id)
  local dev = mine[id]
  if dev and dev:_owned() == id and dev:_data().started then return dev end
end

-- The id and Lua-side data of a device still owned; using a deleted one is misuse.
local function owned(dev)
  local id = dev:_owned()
  if not id then error("attempt to use a deleted ublk device", 3) end
  return id, dev:_data()
end

local function decode_info(bytes)
  local v = core.unpack("dev_info", bytes)
  return {
    id = v.dev_id,
    state = decode.state_names[v.state] or ("state " .. v.state),
    queues = v.nr_hw_queues,
    depth = v.queue_depth,
    max_io = v.max_io_buf_bytes,
    flags = params.flag_names(v.flags),
    flags_mask = v.flags,
    owner_uid = v.owner_uid,
    owner_gid = v.owner_gid,
    pid = v.ublksrv_pid,
    char_path = "/dev/ublkc" .. v.dev_id,
    block_path = "/dev/ublkb" .. v.dev_id,
  }
end

local function info_of(id)
  local path = "/dev/ublkc" .. id
  local name = state.legacy and "GET_DEV_INFO" or "GET_DEV_INFO2"
  local res, out, errno = command(name, { dev_id = id, len = 64,
    dev_path = name == "GET_DEV_INFO2" and path or nil, context = { dev_path = path } })
  if not res then return nil, out, errno end
  return decode_info(out)
end

--- Check options as `ublk.new` does, without creating anything (for tools that fork first).
-- Raises on bad input; returns nil, msg, errno when the OS refuses (e.g. a missing backing file).
function M.check(opts)
  local dev, tgt, errno = targets.prepare(opts)
  if not dev then return nil, tgt, errno end
  local o = params.check(dev, state.features)
  return o, tgt
end

local create -- below M.new

--- Create a device (ADD_DEV, then SET_PARAMS). See the README for every option. With a `target`
-- ('null', 'ram', 'file', optionally with `hooks`) or a `handler` table (a device written in Lua) it
-- can then be served: `dev:start()`, `dev:run()`.
-- @tparam table opts
-- @return device | nil, message, errno
function M.new(opts)
  local c, msg, errno = control.get()
  local devopts, tgt, terrno = targets.prepare(opts) -- misuse raises, whatever the kernel
  if not devopts then return nil, tgt, terrno end
  local o = params.check(devopts, state.features)
  if not c then return nil, msg, errno end
  -- A Ctrl-C or kill while the device is half made would end the process and leave a dead device
  -- in the kernel: SIGINT, SIGTERM and SIGHUP wait until it is made (dev:start(), stop() and delete()
  -- hold them too, for the same reason);
  -- when one of them is about to end the process, the device is deleted first. A signal the
  -- program catches (dev:run()'s, `ublk add`'s) just waits, and the program sees it after.
  local hold <close> = core.hold_signals()
  local dev, why, errno2 = create(c, o, tgt)
  if dev and hold:fatal() then dev:delete() end
  return dev, why, errno2
end

-- ublk.new once its options passed: ADD_DEV, SET_PARAMS, and the parameters read back.
function create(c, o, tgt)
  local dev = core.device(c)
  local info = params.dev_info(o)
  local res, out, errno
  res, out, errno = command("ADD_DEV", { dev_id = o.id or 0xffffffff, buf = info, len = 64,
    context = { info = core.unpack("dev_info", info), opts = o } })
  if not res then return nil, out, errno end
  local got = core.unpack("dev_info", out)
  dev:_adopt(got.dev_id)
  mine[got.dev_id] = dev
  local data = dev:_data()
  data.id = got.dev_id
  data.char_path = "/dev/ublkc" .. got.dev_id
  data.path = "/dev/ublkb" .. got.dev_id
  data.options = o
  data.target = tgt
  -- the kernel may have lowered these (queues to the CPU count, max_io to a page multiple)
  o.queues, o.max_io = got.nr_hw_queues, got.max_io_buf_bytes
  res, out, errno = command("SET_PARAMS", { dev_id = got.dev_id, buf = params.encode(o),
    context = { opts = o } })
  if not res then
    dev:delete()
    return nil, out, errno
  end
  -- A kernel that does not know a parameter block drops it silently (6.12: dma_alignment and the
  -- segment limits): read them back and refuse rather than run with other limits than asked.
  local back, err2, errno2 = dev:params()
  if not back then dev:delete(); return nil, err2, errno2 end
  for _, k in ipairs { "dma_alignment", "seg_boundary", "max_segment_size", "max_segments" } do
    if o[k] ~= nil and back[k] == nil then
      dev:delete()
      return nil, ("SET_PARAMS (device %d): the running kernel ignored %s = %s: its ublk driver has no %s parameter block (added after Linux 6.12)"):format(
        got.dev_id, k, tostring(o[k]), k == "dma_alignment" and "DMA_ALIGN" or "SEGMENT"), core.errno.EOPNOTSUPP
    end
  end
  return dev
end

--- GET_DEV_INFO2, decoded: { id, state, queues, depth, max_io, flags, owner_uid, owner_gid, pid, ... }
function Device:info()
  local id = owned(self)
  return info_of(id)
end

--- GET_PARAMS, decoded into the keys `ublk.new` takes.
function Device:params()
  local id = owned(self)
  local size = core.layout("params").size
  local res, out, errno = command("GET_PARAMS", { dev_id = id, buf = string.pack("<I4", size), len = size })
  if not res then return nil, out, errno end
  local info, msg, errno2 = info_of(id)
  if not info then return nil, msg, errno2 end
  local o = params.decode(out, info)
  local implied = { cmd_ioctl_encode = true, uring_cmd_comp_in_task = true, per_io_daemon = true,
    buf_reg_off_daemon = true, safe_stop_dev = true }
  o.flags = {}
  for _, n in ipairs(info.flags) do if not implied[n] then o.flags[#o.flags + 1] = n end end
  return o
end

--- GET_QUEUE_AFFINITY: the CPUs queue `q` is meant to run on.
-- @return { cpu, ... } | nil, msg, errno
function Device:queue_affinity(q)
  local id = owned(self)
  local opts = self:_data().options
  if math.type(q) ~= "integer" or q < 0 or q >= opts.queues then
    error(("queue_affinity: q = %s: must be an integer from 0 to %d"):format(tostring(q), opts.queues - 1), 2)
  end
  local len = 512 -- 4096 CPUs
  local res, out, errno = command("GET_QUEUE_AFFINITY", { dev_id = id, data = q, len = len })
  if not res then return nil, out, errno end
  local cpus = {}
  for i = 0, len - 1 do
    local b = out:byte(i + 1)
    if b ~= 0 then
      for bit = 0, 7 do if b & (1 << bit) ~= 0 then cpus[#cpus + 1] = i * 8 + bit end end
    end
  end
  return cpus
end

-- Where a running server records what `ublk list` shows beside the kernel's view (target, path).
local RUN_DIR = os.getenv("UBLK_RUN_DIR") or "/run/ublk"

local function record_path(id) return ("%s/%d"):format(RUN_DIR, id) end

local function write_record(dev)
  local data = dev:_data()
  -- mkdir -p, without a shell (see core.mkdir)
  local at = RUN_DIR:sub(1, 1) == "/" and "" or "."
  for part in RUN_DIR:gmatch("[^/]+") do
    at = at .. "/" .. part
    core.mkdir(at)
  end
  local f = io.open(record_path(data.id), "w")
  if not f then return end -- not root: `ublk list` shows less
  local t = data.target
  f:write(("target=%s\npid=%d\n"):format(t.target, core.getpid()))
  if t.path then f:write(("path=%s\n"):format(t.path)) end
  f:close()
end

local function read_record(id)
  local f = io.open(record_path(id))
  if not f then return nil end
  local r = {}
  for line in f:lines() do
    local k, v = line:match("^(%w+)=(.*)$")
    if k then r[k] = v end
  end
  f:close()
  return r
end

-- Poll `ready()` every 10 ms for up to `seconds`: true once it holds.
local function wait_until(seconds, ready)
  local deadline = core.monotonic() + seconds
  repeat
    if ready() then return true end
    core.sleep(0.01)
  until core.monotonic() > deadline
  return false
end

-- Whether process pid has ended: gone, or a zombie nobody has reaped yet.
local function process_ended(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  if not f then return true end
  -- reaped between the open and the read: the read fails (ESRCH), and the process is gone
  local text = f:read("a")
  f:close()
  return not text or text:match("^%d+ %b() (%a)") == "Z"
end

-- a file that opens (and is closed again)
local function opens(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local serve -- below Device:start

--- Start serving: the queues fetch first (their threads, or this thread for a device with a handler
-- or hooks), then START_DEV (which waits for every tag to be fetched and, on 6.12, reads the partition
-- table through the queues). Returns once dev.path is usable. Does nothing when already started.
-- @return true | nil, msg, errno
function Device:start()
  local id, data = owned(self)
  if data.started then return true end
  local tgt = data.target
  if not tgt then
    error("dev:start: this device has no target: create it with target = 'null', 'ram' or 'file'", 2)
  end
  local lua_ops = tgt.handler or tgt.hooks
  if data.was_served and lua_ops then
    error(("dev:start: device %d was stopped, and a device with a handler or hooks is not served again (its Lua side ended with the stop): create a new one"):format(id), 2)
  end
  local hold <close> = core.hold_signals() -- see M.new
  local ok, msg, errno = serve(self, id, data, tgt, lua_ops)
  if hold:fatal() then self:delete() end
  return ok, msg, errno
end

-- dev:start() once its misuse is ruled out: the queues, START_DEV, the device node.
function serve(self, id, data, tgt, lua_ops)
  local o = data.options
  local cfg = { target = tgt.target, path = tgt.path, offset = tgt.offset, direct = tgt.direct,
    size = o.size, block_size = o.block_size, read_only = o.read_only,
    queues = o.queues, depth = o.depth, max_io = o.max_io,
    hooks = 0, hooks_pass = tgt.hooks ~= nil, inline = lua_ops ~= nil and not tgt.queue_threads }
  local by_op = {}
  for name, fn in pairs(lua_ops or {}) do
    by_op[handler.ops[name]] = fn
    cfg.hooks = cfg.hooks | (1 << handler.ops[name])
  end
  -- a stopped device started again: 7.3 serves it, 6.12 refuses its FETCH_REQs (EINVAL)
  local function refused(msg)
    if not data.was_served then return msg end
    return msg .. " (it was stopped before: a kernel may refuse to serve a stopped device again, as 6.12 does; create a new one)"
  end
  local ok, msg, errno = self:_serve(cfg)
  if not ok then
    return nil, refused(("device %d (%s target): %s"):format(id, tgt.target, control.explain_open(data.char_path, msg, errno))), errno
  end
  if lua_ops then
    data.sched = handler.new(self, by_op, tgt.log or function(line)
      io.stderr:write(("ublk: device %d: %s\n"):format(id, line))
    end)
  end
  local affinity = {}
  -- Queue threads of a device written in Lua stay unpinned: they only pass requests on, and one
  -- pinned to the CPU it serves competes there with the program submitting to that CPU (measured
  -- in the VM, two queues on two CPUs: 9.2k, 7.9k, 8.9k random reads pinned, 11.6k, 9.5k, 11.2k not).
  -- A device this thread serves has no queue threads to pin.
  if tgt.target ~= "lua" and not cfg.inline then
    for q = 0, o.queues - 1 do affinity[q + 1] = self:queue_affinity(q) end
  end
  ok, msg, errno = self:_start_queues(affinity)
  if not ok then
    self:_stop_queues()
    return nil, refused(("device %d: starting the queues: %s"):format(id, msg)), errno
  end
  local res
  -- START_DEV may read the partition table through the queues: Lua serves meanwhile
  res, msg, errno = command("START_DEV", { dev_id = id, data = core.getpid(), idle = self:_idler() })
  if not res then
    self:_stop_queues()
    return nil, refused(msg), errno
  end
  data.started, data.was_served = true, true
  -- /dev/ublkbN appears through udev after START_DEV: usable means it opens. Opening it may read
  -- the partition table, which a Lua-served device cannot answer while this thread is in open():
  -- there, usable means the node exists, and Lua serves while we wait.
  local usable = function() return opens(data.path) end
  if data.sched then
    usable = function() data.sched:dispatch(0) return core.exists(data.path) end
  end
  if not wait_until(10, usable) then
    self:stop()
    return nil, ("device %d: START_DEV succeeded but %s did not appear within 10 s (is devtmpfs or udev running?)"):format(id, data.path), core.errno.ENODEV
  end
  write_record(self)
  return true
end

-- How long a stop keeps serving handlers that still hold requests before answering them EIO.
local STOP_GRACE = 5

-- A raw STOP_DEV (require("ublk.control").command, without an idle function of the caller's) for a
-- device this thread serves waits for its requests in flight, which only this thread can answer:
-- serve its Lua side meanwhile, as dev:stop() does. (A raw synchronous DEL_DEV of a served device
-- waits until this process closes the device, which no serving brings: dev:delete() and
-- ublk.delete(id) stop, close and delete in that order.)
control.serving = function(id, name)
  local dev = name == "STOP_DEV" and served_here(id)
  if dev then return dev:_idler(STOP_GRACE) end
end

--- Stop serving: STOP_DEV (requests in flight are still served; new ones fail), then the queues
-- end (their threads, if any, are joined). The device stays until `delete`/`close`. Does nothing when not started.
-- @return true | nil, msg, errno
function Device:stop()
  local id, data = owned(self)
  -- a Ctrl-C that would end the process in the middle leaves a dead device: held back, and when it
  -- is about to end the process, the device is deleted first (see M.new)
  local hold <close> = core.hold_signals()
  local ok, msg, errno = true, nil, nil
  if self:_serving() > 0 or data.started then
    local res, m, e = command("STOP_DEV", { dev_id = id, idle = self:_idler(STOP_GRACE) })
    if not res and e ~= core.errno.ENODEV then ok, msg, errno = nil, m, e end
  end
  self:_stop_queues() -- answers EIO for anything Lua still holds
  data.sched = nil -- a run() dispatching it sees that and looks up what happened
  if data.started then os.remove(record_path(id)) end
  data.started = false
  if hold:fatal() then self:delete() end
  return ok, msg, errno
end

--- Serve until `dev:stop()`, `ublk del`, SIGINT, SIGTERM or SIGHUP; then stop and delete the device.
-- Starts the device first when `dev:start()` was not called.
-- @return true, reason ("signal SIGINT", "signal SIGTERM", "stopped"), id (of the device, now deleted)
--   | nil, msg, errno
function Device:run()
  local id, data = owned(self)
  -- caught from before the start (the CLI's catcher, from before ublk.new), so that a signal that
  -- comes while the device starts ends the run at once
  local catcher <close> = data.catcher or assert(core.catch_signals { core.SIGINT, core.SIGTERM, core.SIGHUP })
  data.catcher = nil
  if not data.started then
    local ok, msg, errno = self:start()
    if not ok then self:delete() return nil, msg, errno end
  end
  local reason
  local sched, ended_fd = data.sched, self:_ended_fd()
  if sched then
    -- one wait for everything: the handlers' work, a signal, the device's end (its dispatches wake
    -- on all three; only the last two need the check below)
    assert(sched:alarm_on(catcher:fd()))
    assert(sched:alarm_on(assert(ended_fd)))
  end
  repeat
    local what, signo
    if sched then
      sched.alarm = false
      sched:dispatch(-1)
      -- a signal or the device's end (the alarms), or a handler that stopped or deleted the device
      -- (its scheduler is gone): only then ask what happened, not after every batch
      if sched.alarm or data.sched ~= sched then what, signo = self:_wait(0, catcher:fd()) end
    else
      what, signo = self:_wait(-1, catcher:fd())
    end
    if what == "signal" then
      reason = "signal " .. (signo == core.SIGINT and "SIGINT" or signo == core.SIGTERM and "SIGTERM"
        or signo == core.SIGHUP and "SIGHUP" or tostring(signo))
    elseif what == "ended" then
      reason = "stopped"
    end
  until reason or (not sched or sched.alarm or data.sched ~= sched) and not self:_owned()
  if sched then sched:alarms_off() end -- the stop's own dispatches must not wake for these (a second Ctrl-C)
  local ok, msg, errno = self:delete()
  if not ok then return nil, msg, errno end
  return true, reason or "stopped", id
end

--- Counters of the data plane: { queues = { {requests, wakeups, submits, errors, cmd_error}, ... },
-- memory, lua } (memory: bytes the ram target holds; lua, for handlers and hooks: { requests, batches,
-- errors, failures, passed, held }), or nil when not served.
function Device:stats()
  local _, data = owned(self)
  local st = self:_stats()
  if st then st.lua = self:_bridge_stats() end
  if st and st.lua and data.sched then st.lua.failures = data.sched.failures end
  return st
end

-- While a control command for this device is with the kernel, keep serving its Lua side; after
-- `grace` seconds (a stop), answer EIO for requests handlers still hold, so the stop can finish.
function Device:_idler(grace)
  local data = self:_data()
  local sched = data.sched
  if not sched then return nil end
  local since = core.monotonic()
  local abandoned = false
  local fd = self:fd()
  return function(ring_fd)
    core.poll(0.05, ring_fd, 1, fd, 1)
    -- never raises: the grace period below must come, or a stop could wait for ever
    local ok, err = pcall(sched.dispatch, sched, 0)
    if not ok then sched:say("dispatching during " .. (grace and "STOP_DEV" or "START_DEV") .. ": " .. tostring(err)) end
    if grace and not abandoned and core.monotonic() - since > grace then
      abandoned = true
      local n = self:_abandon()
      if n > 0 then
        sched:say(("stopping: %d requests still with handlers after %g s were answered EIO"):format(n, grace))
      end
    end
  end
end

--- A descriptor that polls readable when the device's Lua side has work (new requests, a handler's
-- timer or descriptor): for event loops (luv, cqueues), which then call `dev:dispatch()`. Only for
-- started devices with a handler or hooks.
function Device:fd()
  owned(self)
  return self:_bridge_fd()
end

--- Handle what is ready for the device's handlers or hooks without blocking (or waiting up to
-- `timeout` seconds for something to do): new requests, sleeps that ended, descriptors that became
-- readable. Returns the number of new requests started.
function Device:dispatch(timeout)
  local _, data = owned(self)
  if not data.sched then
    error("dev:dispatch: this device has no handler or hooks, or is not started", 2)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("dev:dispatch: timeout must be a number of seconds >= 0", 2)
  end
  return data.sched:dispatch(timeout)
end

--- Stop serving (if served), then DEL_DEV. Also what `__close` and `__gc` do; a second call does
-- nothing. A served device is deleted with DEL_DEV_ASYNC where the kernel has it: a synchronous
-- DEL_DEV would wait until every opener of dev.path (fio, a mount) lets go.
-- @return true | nil, msg, errno
function Device:delete()
  local id = self:_owned()
  if not id then return true end
  local hold <close> = core.hold_signals() -- a Ctrl-C meanwhile waits until the device is gone (see M.new)
  local data = self:_data()
  if data.started or self:_serving() > 0 then
    self:stop()
  else
    -- a start that raised between _serve and the queues' start leaves a server holding the char
    -- device open, and a synchronous DEL_DEV would wait for it for ever: free it (nothing if none)
    self:_stop_queues()
  end
  local was_served = data.was_served
  local name = was_served and not state.legacy and "DEL_DEV_ASYNC" or "DEL_DEV"
  local res, msg, errno = command(name, { dev_id = id })
  if not res and errno ~= core.errno.ENODEV then return nil, msg, errno end
  self:_forget()
  if mine[id] == self then mine[id] = nil end
  return true
end
Device.close = Device.delete

--- Every ublk device on the system, decoded like dev:info().
-- @return { info, ... } | nil, msg, errno
function M.list()
  local c, msg, errno = control.get()
  if not c then return nil, msg, errno end
  local ids = {}
  local p = io.popen("ls /sys/class/ublk-char 2>/dev/null")
  for name in p:lines() do
    local id = name:match("^ublkc(%d+)$")
    if id then ids[#ids + 1] = tonumber(id) end
  end
  p:close()
  table.sort(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local info = info_of(id)
    if info then -- a device deleted meanwhile is simply gone
      local r = read_record(id)
      if r and tonumber(r.pid) == info.pid then info.target, info.backing = r.target, r.path end
      out[#out + 1] = info
    end
  end
  return out
end

--- Delete a device by id, whoever created it: its server (if alive) is asked to stop with SIGTERM,
-- killed if the device is not gone after `wait` seconds (default 10) or the server has not exited 5 s
-- later; then DEL_DEV_ASYNC (DEL_DEV with legacy opcodes). A device this Lua state serves is deleted
-- as `dev:delete()` deletes it.
function M.delete(id, wait)
  if math.type(id) ~= "integer" or id < 0 then error("ublk.delete: id must be a device number", 2) end
  local own = served_here(id)
  if own then return own:delete() end
  local c, msg, errno = control.get()
  if not c then return nil, msg, errno end
  local function gone(seconds)
    return wait_until(seconds, function() return not opens("/sys/class/ublk-char/ublkc" .. id) end)
  end
  -- A live server is asked to stop (SIGTERM: it stops, then deletes the device itself); one that
  -- does not within `wait` seconds is killed, and the device deleted here.
  local function exited(pid, seconds)
    return wait_until(seconds, function() return process_ended(pid) end)
  end
  local info = info_of(id)
  if info and info.pid > 0 and info.pid ~= core.getpid() and core.kill(info.pid, 0) then
    core.kill(info.pid, core.SIGTERM)
    if gone(wait or 10) and exited(info.pid, 5) then return true end
    core.kill(info.pid, core.SIGKILL)
    exited(info.pid, 2)
    if gone(0) then return true end
  end
  local name = state.legacy and "DEL_DEV" or "DEL_DEV_ASYNC"
  local res
  res, msg, errno = command(name, { dev_id = id })
  if not res then
    if errno == core.errno.ENODEV and info then return true end -- its server deleted it meanwhile
    return nil, msg, errno
  end
  os.remove(record_path(id))
  return true
end

--- Inside a handler: this request waits `seconds` while others go on. Elsewhere: sleep.
M.sleep = handler.sleep
--- Inside a handler: wait until `fd` is readable (true) or `timeout` seconds pass (false).
M.readable = handler.readable
--- Inside a handler: wait until `fd` is writable (true) or `timeout` seconds pass (false).
M.writable = handler.writable
--- Seconds on the monotonic clock, for timing requests.
M.now = core.monotonic

--- Decode bytes as the kernel reads them: kind is "sqe", "ctrl-cmd", "dev-info" or "params".
-- @return table (fields with offsets, warnings) | nil, msg
function M.decode(kind, bytes)
  return decode.decode(kind, bytes)
end

--- What the running kernel supports for ublk, and why not: { ok, checks = { {name, ok, detail}, ... } }
function M.doctor()
  return require("ublk.doctor").run(M, state)
end

--- Send legacy opcodes (true) or ioctl-encoded ones (false), whatever the kernel announced: for the
-- specs, which prove both paths on kernels that take both.
M._set_legacy = control.set_legacy

--- Internal state, for the doctor and the specs.
function M._state() return state end
M._read_record = read_record
M._process_ended = process_ended

return M
