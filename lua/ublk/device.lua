--- The device: `ublk.new` makes one (ADD_DEV, SET_PARAMS), and its methods serve, stop and delete
-- it. The type is ublk.device (csrc/lua/device.c): this module is its Lua half, and takes its C
-- methods (`I`) once from ublk.core; only it and the handlers' scheduler hold them.
--
-- While a device is half made or half gone, SIGINT, SIGTERM and SIGHUP are held back (see
-- `with_signals_held`): struck in the middle, the process would die and leave a dead device.
-- @module ublk.device
local core = require("ublk.core")
local control = require("ublk.control")
local params = require("ublk.params")
local targets = require("ublk.targets")
local handler = require("ublk.handler")
local records = require("ublk.records")
local decode = require("ublk.decode")

local I = core.take_internals()
local Device = I.class

local M = {}

local state = control.state
local command = control.command

-- How long a stop keeps serving handlers that still hold requests before answering them EIO.
local STOP_GRACE = 5

-- This Lua state's devices by id, until deleted or collected (weak: a device left to the collector
-- is still collected).
local mine = setmetatable({}, { __mode = "v" })

-- The device with this id that this Lua state serves now, or nil.
local function served_here(id)
  local dev = mine[id]
  if dev and I.owned(dev) == id and I.data(dev).started then return dev end
end

-- The id and own table of a device still owned; using a deleted one is misuse.
local function owned(dev)
  local id = I.owned(dev)
  if not id then error("attempt to use a deleted ublk device", 3) end
  return id, I.data(dev)
end

-- Run fn(...) with SIGINT, SIGTERM and SIGHUP held back (a signal that comes meanwhile waits until
-- fn is done). When one of them came and will end the process once released (its action is the
-- default), dev is deleted first; a signal the program catches (run()'s, `ublk add`'s) just waits,
-- and the program sees it after. fn's values are returned.
local function with_signals_held(dev, fn, ...)
  local hold <close> = core.hold_signals()
  local a, b, c = fn(...)
  if hold:fatal() then dev:delete() end
  return a, b, c
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

--- GET_DEV_INFO2 (GET_DEV_INFO with legacy opcodes) of device `id`, decoded.
-- @return info | nil, msg, errno
function M.info(id)
  local path = "/dev/ublkc" .. id
  local name = state.legacy and "GET_DEV_INFO" or "GET_DEV_INFO2"
  local res, out, errno = command(name, { dev_id = id, len = 64,
    dev_path = name == "GET_DEV_INFO2" and path or nil, context = { dev_path = path } })
  if not res then return nil, out, errno end
  return decode_info(out)
end

--- ublk.new's checks without the kernel: the device options (checked, defaults filled) and the
-- target. Raises on misuse; nil, msg, errno when the OS refuses (a backing file that will not open).
function M.check(opts)
  local devopts, tgt, errno = targets.prepare(opts)
  if not devopts then return nil, tgt, errno end
  return params.check(devopts, state.features, targets.key_names), tgt
end

-- ADD_DEV, SET_PARAMS, and the parameters read back, for a handle that owns nothing yet.
local function create(dev, o, tgt)
  local info = params.dev_info(o)
  local res, out, errno = command("ADD_DEV", { dev_id = o.id or 0xffffffff, buf = info, len = 64,
    context = { info = core.unpack("dev_info", info), opts = o } })
  if not res then return nil, out, errno end
  local got = core.unpack("dev_info", out)
  I.adopt(dev, got.dev_id)
  mine[got.dev_id] = dev
  local data = I.data(dev)
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

-- `ublk recover` runs a program again with UBLK_RECOVER=ID in its environment (and UBLK_REPORT_FD,
-- its report pipe): the program's first ublk.new recovers that device instead of making one
-- (`ublk upgrade` adds UBLK_TAKE_OVER: it takes the device over from its live server).
local pending_recovery = math.tointeger(tonumber(os.getenv("UBLK_RECOVER") or ""))

-- ublk.new in a program `ublk recover` started: recover the device, and tell `ublk recover` how it went.
local function new_recovered(opts)
  local id = pending_recovery
  pending_recovery = nil
  local o = {}
  for k, v in pairs(opts) do if k ~= "id" then o[k] = v end end
  local dev, msg, errno
  if os.getenv("UBLK_TAKE_OVER") then dev, msg, errno = M.take_over(id, o) else dev, msg, errno = M.recover(id, o) end
  local fd = math.tointeger(tonumber(os.getenv("UBLK_REPORT_FD") or ""))
  if fd then
    core.notify(fd, dev and ("ready ublk device %d: %s (recovered, server pid %d)\n"):format(id, dev.path, core.getpid())
      or ("error " .. tostring(msg) .. "\n"))
  end
  return dev, msg, errno
end

--- Create a device (ublk.new): see doc/api.md for every option.
-- @tparam table opts
-- @return device | nil, message, errno
function M.new(opts)
  if pending_recovery and type(opts) == "table" then return new_recovered(opts) end
  local c, msg, errno = control.get()
  local o, tgt, terrno = M.check(opts) -- misuse raises, whatever the kernel
  if not o then return nil, tgt, terrno end
  if not c then return nil, msg, errno end
  local dev = I.new(c)
  local made, why, errno2 = with_signals_held(dev, create, dev, o, tgt)
  return made, why, errno2 -- not a tail call: a traceback shows ublk.new
end

--- GET_DEV_INFO2, decoded: { id, state, queues, depth, max_io, flags, owner_uid, owner_gid, pid, ... }
function Device:info()
  local id = owned(self)
  return M.info(id)
end

-- Feature flags the kernel sets by itself: dev:params() leaves them out, so its flags are the ones
-- to ask for again.
local implied = { cmd_ioctl_encode = true, uring_cmd_comp_in_task = true, per_io_daemon = true,
  buf_reg_off_daemon = true, safe_stop_dev = true }

-- GET_PARAMS of device `id`, decoded into the keys `ublk.new` takes (`info`: its GET_DEV_INFO, when
-- the caller has it).
local function params_of(id, info)
  local size = core.layout("params").size
  local res, out, errno = command("GET_PARAMS", { dev_id = id, buf = string.pack("<I4", size), len = size })
  if not res then return nil, out, errno end
  local msg, errno2
  if not info then
    info, msg, errno2 = M.info(id)
    if not info then return nil, msg, errno2 end
  end
  local o = params.decode(out, info)
  o.flags = {}
  o.recovery = params.recovery_of(info.flags)
  for _, n in ipairs(info.flags) do
    if not implied[n] and not (o.recovery and (params.recovery_flags[n] or n == "quiesce")) then o.flags[#o.flags + 1] = n end
  end
  return o
end

--- GET_PARAMS, decoded into the keys `ublk.new` takes.
-- @return params | nil, msg, errno
function Device:params()
  return params_of((owned(self)))
end

--- GET_QUEUE_AFFINITY: the CPUs queue `q` is meant to run on.
-- @return { cpu, ... } | nil, msg, errno
function Device:queue_affinity(q)
  local id, data = owned(self)
  local queues = data.options.queues
  if math.type(q) ~= "integer" or q < 0 or q >= queues then
    error(("queue_affinity: q = %s: must be an integer from 0 to %d"):format(tostring(q), queues - 1), 2)
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

-- Poll `ready()` every 10 ms for up to `seconds`: true once it holds.
local function wait_until(seconds, ready)
  local deadline = core.monotonic() + seconds
  repeat
    if ready() then return true end
    core.sleep(0.01)
  until core.monotonic() > deadline
  return false
end

-- a file that opens (and is closed again)
local function opens(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- While a control command for this device is with the kernel, keep serving its Lua side; after
-- `grace` seconds (a stop), answer EIO for requests handlers still hold, so the stop can finish.
-- nil for a device without a Lua side.
local function idler(dev, grace)
  local sched = I.data(dev).sched
  if not sched then return nil end
  local since = core.monotonic()
  local abandoned = false
  local fd = I.bridge_fd(dev)
  return function(ring_fd)
    core.poll(0.05, ring_fd, 1, fd, 1)
    -- never raises: the grace period below must come, or a stop could wait for ever
    local ok, err = pcall(sched.dispatch, sched, 0)
    if not ok then sched:say("dispatching during " .. (grace and "STOP_DEV" or "START_DEV") .. ": " .. tostring(err)) end
    if grace and not abandoned and core.monotonic() - since > grace then
      abandoned = true
      local n = I.abandon(dev)
      if n > 0 then
        sched:say(("stopping: %d requests still with handlers after %g s were answered EIO"):format(n, grace))
      end
    end
  end
end

-- dev:start() once its misuse is ruled out: the queues, START_DEV, the device node. A recovery
-- (after START_USER_RECOVERY) ends with END_USER_RECOVERY instead of START_DEV.
local function serve(self, id, data, tgt, lua_ops, recovering)
  local o = data.options
  local cfg = { target = tgt.target, path = tgt.path, offset = tgt.offset, direct = tgt.direct,
    size = o.size, block_size = o.block_size, read_only = o.read_only,
    queues = o.queues, depth = o.depth, max_io = o.max_io,
    hooks = 0, hooks_pass = tgt.hooks ~= nil, queue_threads = lua_ops == nil or tgt.queue_threads }
  local by_op = {}
  for name, fn in pairs(lua_ops or {}) do
    by_op[handler.ops[name]] = fn
    cfg.hooks = cfg.hooks | (1 << handler.ops[name])
  end
  -- a stopped device started again: 7.3 serves it, 6.12 refuses its FETCH_REQs (EINVAL)
  local function with_restart_hint(msg)
    if not data.was_served then return msg end
    return msg .. " (it was stopped before: a kernel may refuse to serve a stopped device again, as 6.12 does; create a new one)"
  end
  local ok, msg, errno = I.serve(self, cfg)
  if not ok then
    return nil, with_restart_hint(("device %d (%s target): %s"):format(id, tgt.target, control.explain_open(data.char_path, msg, errno))), errno
  end
  if lua_ops then
    data.sched = handler.new(self, I, by_op, tgt.log or function(line)
      io.stderr:write(("ublk: device %d: %s\n"):format(id, line))
    end)
  end
  local affinity = {}
  -- Queue threads of a device written in Lua stay unpinned: they only pass requests on, and one
  -- pinned to the CPU it serves competes there with the program submitting to it (doc/design.md).
  -- Lua-owned rings have no threads to pin.
  if tgt.target ~= "lua" and cfg.queue_threads then
    for q = 0, o.queues - 1 do affinity[q + 1] = self:queue_affinity(q) end
  end
  ok, msg, errno = I.start_queues(self, affinity)
  if not ok then
    I.stop_queues(self)
    return nil, with_restart_hint(("device %d: starting the queues: %s"):format(id, msg)), errno
  end
  local res
  -- START_DEV may read the partition table through the queues, and END_USER_RECOVERY gives the new
  -- server what was requeued at once: Lua serves meanwhile
  res, msg, errno = command(recovering and "END_USER_RECOVERY" or "START_DEV",
    { dev_id = id, data = core.getpid(), idle = idler(self) })
  if not res then
    I.stop_queues(self)
    return nil, with_restart_hint(msg), errno
  end
  data.started, data.was_served = true, true
  -- a raw STOP_DEV for this device (ublk.control's command) serves its Lua side meanwhile
  data.idle_for = function(name) if name == "STOP_DEV" then return idler(self, STOP_GRACE) end end
  control.serving(id, data.idle_for)
  -- /dev/ublkbN appears through udev after START_DEV: usable means it opens. Opening it may read
  -- the partition table, which a device with Lua-owned rings cannot answer while this thread is in
  -- open(): there, usable means the node exists, and Lua serves while we wait.
  local usable = function() return opens(data.path) end
  if data.sched then
    usable = function() data.sched:dispatch(0) return core.exists(data.path) end
  end
  if not wait_until(10, usable) then
    self:stop()
    return nil, ("device %d: START_DEV succeeded but %s did not appear within 10 s (is devtmpfs or udev running?)"):format(id, data.path), core.errno.ENODEV
  end
  records.write(id, { target = tgt.target, path = tgt.path, direct = tgt.path and tgt.direct, offset = tgt.path and tgt.offset,
    recovery = o.recovery, program = lua_ops ~= nil })
  return true
end

--- Start serving: the queues fetch first (their threads, or this thread for Lua-owned rings), then
-- START_DEV (which waits for every tag to be fetched and, on 6.12, reads the partition table through
-- the queues). Returns once dev.path is usable. Does nothing when already started.
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
    error(("dev:start: device %d was stopped, and a device with a handler or hooks is not served again (its " ..
      "Lua side ended with the stop): create a new one"):format(id), 2)
  end
  local ok, msg, errno = with_signals_held(self, serve, self, id, data, tgt, lua_ops)
  return ok, msg, errno -- not a tail call: an error's traceback shows dev:start()
end

-- dev:stop(): STOP_DEV while the Lua side is served, then the queues go.
local function stop(self, id, data)
  local ok, msg, errno = true, nil, nil
  if I.serving(self) > 0 or data.started then
    local res, m, e = command("STOP_DEV", { dev_id = id, idle = idler(self, STOP_GRACE) })
    if not res and e ~= core.errno.ENODEV then ok, msg, errno = nil, m, e end
  end
  I.stop_queues(self) -- answers EIO for anything Lua still holds
  data.sched = nil -- a run() dispatching it sees that and looks up what happened
  if data.started then records.remove(id) end
  if data.idle_for then control.unserving(id, data.idle_for) end
  data.idle_for, data.started = nil, false
  return ok, msg, errno
end

--- Stop serving: STOP_DEV (requests in flight are still served; new ones fail), then the queues
-- end (their threads, if any, are joined). The device stays until `delete`/`close`. Does nothing
-- when not started.
-- @return true | nil, msg, errno
function Device:stop()
  local id, data = owned(self)
  local ok, msg, errno = with_signals_held(self, stop, self, id, data)
  return ok, msg, errno -- not a tail call: an error's traceback shows dev:stop()
end

-- The signal that ended a run, by name.
local function signal_name(signo)
  return signo == core.SIGINT and "SIGINT" or signo == core.SIGTERM and "SIGTERM"
    or signo == core.SIGHUP and "SIGHUP" or tostring(signo)
end

--- Serve until `dev:stop()`, `ublk del`, SIGINT, SIGTERM or SIGHUP; then stop and delete the device.
-- SIGUSR1 (sent by `ublk.take_over`) hands the device over instead (`dev:handover()`), and the run
-- ends with the device left to its new server. Starts the device first when `dev:start()` was not called.
-- @param[opt] catcher a signal catcher (`ublk.core.catch_signals`) of SIGINT, SIGTERM and SIGHUP that
--   the program made before the device, so that a signal while it was made ends the run at once;
--   run() closes it. Without it, run() catches them itself.
-- @return true, reason ("signal SIGINT", "signal SIGTERM", "stopped", "handed over"), id (of the device,
--   now deleted, or served by another process)
--   | nil, msg, errno
function Device:run(catcher)
  local id, data = owned(self)
  catcher = catcher or assert(core.catch_signals { core.SIGINT, core.SIGTERM, core.SIGHUP, core.SIGUSR1 })
  local _ <close> = catcher
  if not data.started then
    local ok, msg, errno = self:start()
    if not ok then self:delete() return nil, msg, errno end
  end
  local reason, alarmed
  local sched, ended_fd = data.sched, I.ended_fd(self)
  if sched then
    -- one wait for everything: the handlers' work, a signal, the device's end (its dispatches wake
    -- on all three; only the last two need the check below)
    assert(sched:alarm_on(catcher:fd()))
    assert(sched:alarm_on(assert(ended_fd)))
  end
  repeat
    local what, signo
    if sched then
      alarmed = sched:dispatch_alarmed(-1)
      -- a signal or the device's end (the alarms), or a handler that stopped or deleted the device
      -- (its scheduler is gone): only then ask what happened, not after every batch
      if alarmed or data.sched ~= sched then what, signo = I.wait(self, 0, catcher:fd()) end
    else
      what, signo = I.wait(self, -1, catcher:fd())
    end
    if what == "signal" and signo == core.SIGUSR1 then
      -- a new server asks for the device (ublk.take_over): hand it over, or say why not and serve on
      local ok, msg = self:handover()
      if ok then reason = "handed over" else io.stderr:write("ublk: device ", id, ": ", msg, "\n") end
    elseif what == "signal" then
      reason = "signal " .. signal_name(signo)
    elseif what == "ended" then
      reason = "stopped"
    end
  until reason or (not sched or alarmed or data.sched ~= sched) and not I.owned(self)
  if sched then sched:alarms_off() end -- the stop's own dispatches must not wake for these (a second Ctrl-C)
  local ok, msg, errno = self:delete() -- nothing after a hand-over: the device is no longer ours
  if not ok then return nil, msg, errno end
  return true, reason or "stopped", id
end

-- The device's own flags say whether it takes QUIESCE_DEV.
local function quiesce_refusal(id, info)
  for _, n in ipairs(info.flags) do if n == "quiesce" then return nil end end
  return ("device %d has no UBLK_F_QUIESCE, which a live hand-over needs (the running kernel's ublk driver %s; Linux 6.16 " ..
    "brings it): with recovery = 'requeue', kill its server (SIGKILL) and run ublk recover %d: requests wait meanwhile and " ..
    "go to the new server, none fails"):format(id, state.features and state.features & (1 << 12) ~= 0
    and "has it, but the device was made without it" or "lacks it", id)
end

-- After QUIESCE_DEV: answer what Lua holds (up to STOP_GRACE), end the queues (their answers go
-- out, and the char device is closed: the kernel then holds the device for the next server), and
-- let go of the device without STOP_DEV or DEL_DEV. The run record stays for the next server.
local function let_go(self, id, data)
  local sched = data.sched
  if sched then
    local deadline = core.monotonic() + STOP_GRACE
    local function held() local st = I.bridge_stats(self) return st and st.held or 0 end
    while held() > 0 and core.monotonic() < deadline do sched:dispatch(0.05) end
  end
  I.stop_queues(self)
  data.sched = nil
  if data.idle_for then control.unserving(id, data.idle_for) end
  data.idle_for, data.started = nil, false
  I.forget(self)
  if mine[id] == self then mine[id] = nil end
  return true
end

--- Hand the device over to the next server (Linux 6.16 and later: UBLK_F_QUIESCE): QUIESCE_DEV, then
-- this process answers what it holds and lets go of the device, which stays. Its I/O waits until the
-- next server recovers it (`ublk.recover`, or the `ublk.take_over` that asked for this). The handle
-- owns nothing afterwards. Waits up to `timeout` seconds (default 10) for the kernel.
-- @return true | nil, msg, errno
function Device:handover(timeout)
  local id, data = owned(self)
  if not data.started then error("dev:handover: the device is not served", 2) end
  if not data.options.recovery then
    error(("dev:handover: device %d was made without recovery: no other server can take it"):format(id), 2)
  end
  if data.options.recovery == "fail_io" then
    return nil, ("dev:handover: device %d has recovery = 'fail_io', which fails its I/O while no server runs: "
      .. "a hand-over needs 'requeue' or 'fail_in_flight'"):format(id), core.errno.EINVAL
  end
  local info, msg, errno = M.info(id)
  if not info then return nil, msg, errno end
  local refused = quiesce_refusal(id, info)
  if refused then return nil, "dev:handover: " .. refused, core.errno.EOPNOTSUPP end
  local function quiesce()
    local res, m, e = command("QUIESCE_DEV", { dev_id = id, data = math.floor((timeout or 10) * 1000), idle = idler(self) })
    if not res then return nil, m, e end
    return let_go(self, id, data)
  end
  local ok, m, e = with_signals_held(self, quiesce)
  return ok, m, e -- not a tail call: a traceback shows dev:handover()
end

--- Counters of the data plane: { queues = { {requests, wakeups, submits, errors, cmd_error}, ... },
-- memory, lua } (memory: bytes the ram target holds; lua, for handlers and hooks: { requests, batches,
-- errors, failures, passed, held }), or nil when not served.
function Device:stats()
  local _, data = owned(self)
  local st = I.stats(self)
  if st then st.lua = I.bridge_stats(self) end
  if st and st.lua and data.sched then st.lua.failures = data.sched.failures end
  return st
end

--- A descriptor that polls readable when the device's Lua side has work (new requests, a handler's
-- timer or descriptor): for event loops (luv, cqueues), which then call `dev:dispatch()`. Only for
-- started devices with a handler or hooks.
function Device:fd()
  owned(self)
  return I.bridge_fd(self)
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

-- dev:delete() of a device still owned: stop it, then the delete ctrl.h chooses.
local function delete(self, id)
  local data = I.data(self)
  if data.started or I.serving(self) > 0 then
    self:stop()
  else
    -- a start that raised between serve and the queues' start leaves a server holding the char
    -- device open, and a synchronous DEL_DEV would wait for it for ever: free it (nothing if none)
    I.stop_queues(self)
  end
  local c = assert(control.get())
  local res, msg, errno = command(c:delete_command(data.was_served), { dev_id = id })
  if not res and errno ~= core.errno.ENODEV then return nil, msg, errno end
  I.forget(self)
  if mine[id] == self then mine[id] = nil end
  return true
end

--- Stop serving (if served), then delete the device. Also what `close`, `__close` and `__gc` do; a
-- second call does nothing. A served device is deleted with DEL_DEV_ASYNC where the kernel has it:
-- a synchronous DEL_DEV would wait until every opener of dev.path (fio, a mount) lets go.
-- @return true | nil, msg, errno
function Device:delete()
  local id = I.owned(self)
  if not id then return true end
  local ok, msg, errno = with_signals_held(self, delete, self, id)
  return ok, msg, errno -- not a tail call: an error's traceback shows dev:delete()
end
--- The same as `dev:delete()`, under the name files have (liolib's `close`).
-- @function Device:close
Device.close = Device.delete

-- How long recovery waits for the kernel to release the old server's device: 6.12 quiesces a queue
-- whose every tag was in flight only when the block layer's 30 s request timeout strikes.
local RECOVER_WAIT = 45

-- Keys of a recovered device that are the kernel's: a value given for one must be the device's.
local FIXED = { "size", "block_size", "queues", "depth", "read_only", "recovery" }

-- ublk.recover's checks: the device can take a new server here, and the options fit it. Returns the
-- device's options (the kernel's), the target, and info; or nil, msg, errno.
local function recovery_plan(id, opts, take_over)
  local info, msg, errno = M.info(id)
  if not info then return nil, msg, errno end
  local kp
  kp, msg, errno = params_of(id, info)
  if not kp then return nil, msg, errno end
  if not kp.recovery then
    return nil, ("ublk.recover: device %d was made without recovery (flags %s): no new server can take it; " ..
      "delete it (ublk del %d) and make it again with recovery = 'requeue', 'fail_in_flight' or 'fail_io'"):format(
      id, table.concat(info.flags, ","), id), core.errno.EINVAL
  end
  if info.state == "dead" then
    return nil, ("ublk.recover: device %d is DEAD (stopped): only ublk del %d is left"):format(id, id), core.errno.ENODEV
  end
  local alive = info.state == "live" and info.pid > 0 and not M.process_ended(info.pid)
  if take_over then
    if not alive then
      return nil, ("ublk.take_over: device %d has no live server (state %s): use ublk.recover"):format(id, info.state),
        core.errno.ESRCH
    end
    local refused = quiesce_refusal(id, info)
    if refused then return nil, "ublk.take_over: " .. refused, core.errno.EOPNOTSUPP end
    if kp.recovery == "fail_io" then
      return nil, ("ublk.take_over: device %d has recovery = 'fail_io', which fails its I/O while no server runs: "
        .. "a hand-over needs 'requeue' or 'fail_in_flight'"):format(id), core.errno.EINVAL
    end
  elseif alive then
    return nil, ("ublk.recover: device %d is LIVE, served by pid %d: a new server takes over only once that one is gone "
      .. "(or hands it over: ublk.take_over)"):format(id, info.pid), core.errno.EBUSY
  end
  -- the file target makes a missing file; here that would be a device of zeros in place of the data
  if opts.target == "file" and type(opts.path) == "string" and not core.exists(opts.path) then
    return nil, ("ublk.recover: file target: %s: No such file or directory (the backing file holds the device's data: "
      .. "a new one would serve zeros)"):format(opts.path), core.errno.ENOENT
  end
  local want = {}
  for k, v in pairs(opts) do want[k] = v end
  for _, k in ipairs { "size", "block_size" } do if want[k] == nil then want[k] = kp[k] end end
  local o, tgt, terrno = M.check(want) -- misuse raises
  if not o then return nil, tgt, terrno end
  if not tgt then error("ublk.recover: no target: give target = 'null' or 'file' with its options, or handler = {...}", 3) end
  for _, k in ipairs(FIXED) do
    local given = o[k]
    if k == "queues" or k == "depth" then given = opts[k] end
    if given ~= nil and given ~= kp[k] and not (k == "read_only" and kp.read_only) then
      return nil, ("ublk.recover: %s = %s, but device %d has %s = %s (a recovered device keeps what it was made with)"):format(
        k, tostring(given), id, k, tostring(kp[k])), core.errno.EINVAL
    end
  end
  kp.id = id
  return kp, tgt, info
end

-- ublk.recover and ublk.take_over.
local function recover(id, opts, take_over)
  local name = take_over and "ublk.take_over" or "ublk.recover"
  if math.type(id) ~= "integer" or id < 0 or id >= 1 << 20 then
    error(("%s: id = %s: must be a device number from 0 to %d"):format(name, tostring(id), (1 << 20) - 1), 3)
  end
  if opts == nil then
    -- the C target its last server recorded (a program's own target is the program's to give)
    local r = records.read(id)
    if not r then
      return nil, ("%s: device %d has no run record in %s: name its target in opts"):format(name, id, records.dir()),
        core.errno.ENOENT
    end
    if r.argv then
      return nil, ("%s: device %d was served by a program with Lua in its path (%s): run it again with UBLK_RECOVER=%d "
        .. "(ublk recover %d does), or give its handler or hooks in opts"):format(name, id, table.concat(r.argv, " "), id, id),
        core.errno.EINVAL
    end
    opts = { target = r.target, path = r.path, direct = r.direct, offset = r.offset }
  end
  if type(opts) ~= "table" then error(name .. ": expected a table of options, got " .. type(opts), 3) end
  local c, msg, errno = control.get()
  if not c then return nil, msg, errno end
  local o, tgt, info = recovery_plan(id, opts, take_over)
  if not o then return nil, tgt, info end
  local dev = I.new(c)
  -- the old server hands the device over when asked (its run() reads SIGUSR1); recovery then waits
  -- for it to let go, as for a dead one
  if take_over and not core.kill(info.pid, core.SIGUSR1) then
    return nil, ("%s: device %d: its server (pid %d) could not be asked to hand it over"):format(name, id, info.pid), core.errno.ESRCH
  end
  local function take()
    -- EBUSY until the kernel has quiesced the device and the old server's /dev/ublkcN is released
    -- a cheap command, polled every 10 ms: the I/O waits no longer than it must
    local res, m, e
    wait_until(RECOVER_WAIT, function()
      res, m, e = command("START_USER_RECOVERY", { dev_id = id })
      return res or e ~= core.errno.EBUSY
    end)
    if not res then
      if e == core.errno.EBUSY then
        m = ("%s (still after %d s: %s)"):format(m, RECOVER_WAIT, take_over
          and ("the server, pid %d, did not hand the device over: does its program serve with dev:run()?"):format(info.pid)
          or ("is the old server, pid %d, still running?"):format(info.pid))
      end
      return nil, m, e
    end
    I.adopt(dev, id)
    mine[id] = dev
    local data = I.data(dev)
    data.id, data.char_path, data.path = id, "/dev/ublkc" .. id, "/dev/ublkb" .. id
    data.options, data.target = o, tgt
    local ok
    ok, m, e = serve(dev, id, data, tgt, tgt.handler or tgt.hooks, true)
    if not ok then
      -- the device stays as the crash left it, for another try or ublk del
      I.forget(dev)
      mine[id] = nil
      return nil, ("%s; device %d is left without a server: try again, or ublk del %d"):format(m, id, id), e
    end
    return dev
  end
  local made, why, errno2 = with_signals_held(dev, take)
  return made, why, errno2
end

--- Give device `id`, whose server is gone, a new server in this process (ublk.recover): see doc/api.md.
-- `opts` names the target as for ublk.new (default: the C target its run record names); the device's
-- size, queues and limits are the kernel's.
-- @return device (started) | nil, msg, errno
function M.recover(id, opts)
  local dev, msg, errno = recover(id, opts, false)
  return dev, msg, errno -- not a tail call: a traceback shows ublk.recover
end

--- Take device `id` over from its live server (ublk.take_over): it is asked to hand the device over
-- (SIGUSR1: its run() calls dev:handover()), and this process recovers it. I/O waits meanwhile.
-- @return device (started) | nil, msg, errno
function M.take_over(id, opts)
  local dev, msg, errno = recover(id, opts, true)
  return dev, msg, errno -- not a tail call: a traceback shows ublk.take_over
end

--- Whether process pid has ended: gone, or a zombie nobody has reaped yet (what ublk.delete waits for).
function M.process_ended(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  if not f then return true end
  -- reaped between the open and the read: the read fails (ESRCH), and the process is gone
  local text = f:read("a")
  f:close()
  return not text or text:match("^%d+ %b() (%a)") == "Z"
end

--- Every ublk device on the system, decoded like dev:info(), with the target and backing file of
-- those whose server left a run record.
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
    local info = M.info(id)
    if info then -- a device deleted meanwhile is simply gone
      local r = records.read(id)
      local alive = info.pid > 0 and not M.process_ended(info.pid)
      -- a record left behind is the last server's: it died (7.3 reports its pid as -1 then)
      if r and (tonumber(r.pid) == info.pid or not alive) then info.target, info.backing = r.target, r.path end
      if alive then
        info.server = "alive"
      elseif r or info.state ~= "dead" then
        info.server = "gone"
      end
      info.recovery = params.recovery_of(info.flags)
      out[#out + 1] = info
    end
  end
  return out
end

--- Delete a device by id, whoever created it (ublk.delete): see doc/api.md.
-- @return true | nil, msg, errno
function M.delete(id, wait)
  local own = served_here(id)
  if own then return own:delete() end
  local c, msg, errno = control.get()
  if not c then return nil, msg, errno end
  local function gone(seconds)
    return wait_until(seconds, function() return not opens("/sys/class/ublk-char/ublkc" .. id) end)
  end
  local function exited(pid, seconds)
    return wait_until(seconds, function() return M.process_ended(pid) end)
  end
  -- A live server is asked to stop (SIGTERM: it stops, then deletes the device itself); one that
  -- does not within `wait` seconds is killed, and the device deleted here.
  local info = M.info(id)
  if info and info.pid > 0 and info.pid ~= core.getpid() and core.kill(info.pid, 0) then
    core.kill(info.pid, core.SIGTERM)
    if gone(wait or 10) and exited(info.pid, 5) then return true end
    core.kill(info.pid, core.SIGKILL)
    exited(info.pid, 2)
    if gone(0) then return true end
  end
  local res
  res, msg, errno = command(c:delete_command(true), { dev_id = id })
  if not res then
    if errno == core.errno.ENODEV and info then return true end -- its server deleted it meanwhile
    return nil, msg, errno
  end
  records.remove(id)
  return true
end

return M
