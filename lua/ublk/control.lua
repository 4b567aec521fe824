--- The control side shared by every device of a Lua state: /dev/ublk-control opened once, the opcode
-- style the kernel takes, the trace, and `command`, which sends one control command and turns a
-- refusal into a sentence (ublk.errors).
-- @module ublk.control
local core = require("ublk.core")
local errors = require("ublk.errors")
local decode = require("ublk.decode")
local params = require("ublk.params")

local M = {}

local state = {
  control = nil,   -- the shared control handle, opened on first use
  legacy = false,  -- send legacy opcodes (the kernel lacks CMD_IOCTL_ENCODE)
  features = nil,  -- GET_FEATURES mask, once known
  trace = false,
  trace_out = io.stderr,
}

--- Print every control command, decoded, to stderr before and after the kernel sees it.
-- @tparam boolean on
-- @param[opt] out a file to write to instead of io.stderr
function M.trace(on, out)
  state.trace = on and true or false
  state.trace_out = out or io.stderr
end

local function trace_line(fmt, ...)
  state.trace_out:write("ublk: ", fmt:format(...), "\n")
  state.trace_out:flush()
end

-- the struct each command's buffer holds, for the trace
local buffer_kind = { ADD_DEV = "dev_info", GET_DEV_INFO = "dev_info", GET_DEV_INFO2 = "dev_info",
  SET_PARAMS = "params", GET_PARAMS = "params" }

--- The control node's path: $UBLK_CONTROL (the specs point it elsewhere), or /dev/ublk-control.
function M.path()
  return os.getenv("UBLK_CONTROL") or "/dev/ublk-control"
end

--- What a failed open of a ublk node means (module missing, no devtmpfs, permissions), or msg.
function M.explain_open(path, msg, errno)
  local E = core.errno
  if errno == E.ENOENT then
    local loaded = io.open("/sys/module/ublk_drv")
    if loaded then loaded:close() end
    return ("%s is missing: %s"):format(path, loaded
      and "ublk_drv is loaded but the node was not created (is devtmpfs or udev running?)"
      or "the ublk_drv module is not loaded (modprobe ublk_drv; the kernel needs CONFIG_BLK_DEV_UBLK)")
  elseif errno == E.EACCES or errno == E.EPERM then
    return ("%s: permission denied: run as root, or give this user access to the node with a udev rule (unprivileged ublk)"):format(path)
  end
  return msg
end

--- The shared control handle, opened on first use.
-- @return control, or nil, message, errno
function M.get()
  if state.control then return state.control end
  local path = M.path()
  local c, msg, errno = core.open_control(path)
  if not c then return nil, M.explain_open(path, msg, errno), errno end
  state.control = c
  -- Negotiate the opcode style: GET_FEATURES exists only ioctl-encoded and says whether the
  -- kernel takes ioctl-encoded commands at all (UBLK_F_CMD_IOCTL_ENCODE).
  local res, out = c:command(core.commands.GET_FEATURES.ioctl, 0xffffffff, 0xffff, 0, nil, 8)
  if res == 0 then
    state.features = string.unpack("<I8", out)
    state.legacy = state.features & (1 << 6) == 0
  else
    -- refused: legacy opcodes; features_res (the -errno, or nil when the ring failed) says why
    state.features, state.legacy, state.features_res = nil, true, res
  end
  c:set_legacy(state.legacy)
  if state.trace then
    trace_line("control: %s%s", path, state.legacy
      and " (GET_FEATURES refused: this kernel lacks CMD_IOCTL_ENCODE; sending legacy opcodes)"
      or (" (features 0x%x; sending ioctl-encoded opcodes)"):format(state.features))
  end
  return c
end

--- Close the shared control handle (the next use opens it again), keeping what it learned (features,
-- opcode style): for a program that forks next, whose child must not share the ring.
function M.release()
  if state.control then
    state.control:close()
    state.control = nil
  end
end

-- The devices this Lua state serves: id -> idle_for(name), which gives the idle function a command
-- `name` about the device needs (one that would wait for requests only this thread answers), or
-- nil. Weak: a device left to the collector is still collected.
local idlers = setmetatable({}, { __mode = "v" })

--- While device `id` is served by this Lua state, `idle_for(name)` gives the idle function a
-- command about it must run while the kernel works (nil: none).
function M.serving(id, idle_for)
  idlers[id] = idle_for
end

--- Device `id` is no longer served with `idle_for` (nothing when another device has the id now).
function M.unserving(id, idle_for)
  if idlers[id] == idle_for then idlers[id] = nil end
end

--- Send one control command. `a` = { dev_id, queue_id, data, buf, len, dev_path, context, idle }:
-- `idle` runs while the kernel has not answered; without it, a device this Lua state serves gives
-- one (`M.serving`).
-- @return res (>= 0), out | nil, message, errno
function M.command(name, a)
  local c, msg, errno = M.get()
  if not c then return nil, msg, errno end
  local cmd = core.commands[name]
  local op = cmd.ioctl
  if state.legacy then
    if not cmd.has_legacy then
      return nil, ("%s: the running kernel has only legacy ublk opcodes and %s has none"):format(name, name), core.errno.EOPNOTSUPP
    end
    op = cmd.nr
  end
  local dev_id, queue_id = a.dev_id or 0xffffffff, a.queue_id or 0xffff
  local tracer
  if state.trace then
    tracer = function(sqe, buf)
      local s = decode.sqe(sqe)
      local h = s.ctrl_cmd.values
      trace_line("-> %s (%s %s) dev_id=%s queue_id=%s len=%d addr=0x%x data=0x%x dev_path_len=%d",
        name, state.legacy and "legacy" or "ioctl", ("0x%x"):format(op), h.dev_id == 0xffffffff and "-1" or h.dev_id,
        h.queue_id == 0xffff and "-1" or h.queue_id, h.len, h.addr, h.data, h.dev_path_len)
      local kind = buffer_kind[name]
      if kind and (name == "ADD_DEV" or name == "SET_PARAMS") and buf then
        local t = decode.decode(kind, buf:sub(h.dev_path_len + 1))
        if t then trace_line("   %s", decode.format(t, "   "):gsub("^%s+", "")) end
      end
    end
  end
  local idle = a.idle
  local idle_for = idle == nil and a.dev_id and idlers[a.dev_id]
  if idle_for then idle = idle_for(name) end
  local res, out, sqe = c:command(op, dev_id, queue_id, a.data or 0, a.buf, a.len, tracer, a.dev_path, idle)
  if res == nil then return nil, out, sqe end -- the ring itself failed
  if state.trace then
    if res < 0 then
      trace_line("<- %s = %d (-%s)", name, res, errors.name(-res))
    else
      trace_line("<- %s = %d", name, res)
      local kind = buffer_kind[name]
      if kind and out and name ~= "SET_PARAMS" then
        local t = decode.decode(kind, out)
        if t then trace_line("   %s", decode.format(t, "   "):gsub("^%s+", "")) end
      end
    end
  end
  if res < 0 then
    local ctx = a.context or {}
    ctx.command, ctx.dev_id = name, dev_id
    ctx.header = ctx.header or { dev_id = dev_id, queue_id = queue_id, len = a.len or (a.buf and #a.buf) or 0, data = a.data or 0 }
    return nil, errors.explain(ctx, -res), -res
  end
  return res, out
end

--- The kernel's ublk features (GET_FEATURES).
-- @return { mask = n, names = {...}, ioctl_encode = bool, legacy_opcodes = bool } | nil, msg, errno
function M.features()
  local c, msg, errno = M.get()
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

--- Send legacy opcodes (true) or ioctl-encoded ones (false), whatever the kernel announced.
function M.set_legacy(on)
  local c, msg, errno = M.get()
  if not c then return nil, msg, errno end
  state.legacy = on and true or false
  c:set_legacy(state.legacy)
  return true
end

--- control, legacy, features, trace: read by ublk.device, the doctor and the specs.
M.state = state

return M
