--- lua-ublk: Linux userspace block devices (ublk) from Lua 5.4.
--
--     local ublk = require("ublk")
--     local dev <close> = assert(ublk.new{ size = 64 * 2^20, queues = 2, depth = 64 })
--     print(dev.id, dev.char_path, dev:info().state)
--
-- Misuse and bad parameters raise a Lua error naming the key and the allowed range. When the kernel
-- or the OS refuses, functions return `nil, message, errno`; the message names the command, the
-- errno and the kernel's checks that can produce it. doc/api.md has the whole API.
-- @module ublk
local core = require("ublk.core")
local control = require("ublk.control")
local decode = require("ublk.decode")
local device = require("ublk.device")
local handler = require("ublk.handler")

local M = {
  --- The release, as in the rockspec's version ("0.2.0").
  version = require("ublk.version"),
  --- The raw C module, for tools and specs.
  core = core,
}

--- Create a device (ADD_DEV, then SET_PARAMS). With a `target` ('null', 'ram', 'file', optionally
-- with `hooks`) or a `handler` table (a device written in Lua) it can then be served:
-- `dev:start()`, `dev:run()`. doc/api.md lists every option.
-- @function new
-- @tparam table opts
-- @return device | nil, message, errno
M.new = device.new

--- Give device `id`, whose server is gone (killed, crashed), a new server in this process:
-- START_USER_RECOVERY, the queues, END_USER_RECOVERY. The device must have been made with
-- `recovery`; `opts` names the target as for `ublk.new` (its size, queues and limits are the
-- device's; without opts, the C target the device's run record names). Returns the device
-- started, as `dev:start()` leaves it.
-- @function recover
-- @tparam integer id
-- @tparam[opt] table opts
-- @return device | nil, message, errno
M.recover = device.recover

--- Take device `id` over from its live server, which hands it over (Linux 6.16 and later): the server is
-- sent SIGUSR1, its `dev:run()` calls `dev:handover()` (QUIESCE_DEV, then it lets go of the device),
-- and this process recovers the device as `ublk.recover` does. I/O waits meanwhile; none fails.
-- @function take_over
-- @tparam integer id
-- @tparam[opt] table opts
-- @return device | nil, message, errno
M.take_over = device.take_over

--- Check options as `ublk.new` does, without creating anything (for tools that fork first).
-- Raises on bad input; returns nil, msg, errno when the OS refuses (e.g. a missing backing file).
-- @function check
-- @tparam table opts
-- @return options, target | nil, msg, errno
M.check = device.check

--- Every ublk device on the system, decoded like dev:info().
-- @function list
-- @return { info, ... } | nil, msg, errno
M.list = device.list

--- Delete a device by id, whoever created it: its server (if alive) is asked to stop with SIGTERM,
-- killed if the device is not gone after `wait` seconds (default 10) or the server has not exited 5 s
-- later; then DEL_DEV_ASYNC (DEL_DEV with legacy opcodes). A device this Lua state serves is deleted
-- as `dev:delete()` deletes it.
-- @tparam integer id
-- @tparam[opt=10] number wait
-- @return true | nil, msg, errno
function M.delete(id, wait)
  if math.type(id) ~= "integer" or id < 0 then error("ublk.delete: id must be a device number", 2) end
  return device.delete(id, wait)
end

--- The kernel's ublk features (GET_FEATURES).
-- @function features
-- @return { mask = n, names = {...}, ioctl_encode = bool, legacy_opcodes = bool } | nil, msg, errno
M.features = control.features

--- Print every control command, decoded, to stderr before and after the kernel sees it.
-- @function trace
-- @tparam boolean on
-- @param[opt] out a file to write to instead of io.stderr
M.trace = control.trace

--- Inside a handler: this request waits `seconds` while others go on. Elsewhere: sleep.
-- @function sleep
M.sleep = handler.sleep
--- Inside a handler: wait until `fd` is readable (true) or `timeout` seconds pass (false).
-- @function readable
M.readable = handler.readable
--- Inside a handler: wait until `fd` is writable (true) or `timeout` seconds pass (false).
-- @function writable
M.writable = handler.writable
--- Seconds on the monotonic clock, for timing requests.
-- @function now
M.now = core.monotonic

--- Decode bytes as the kernel reads them: kind is "sqe", "ctrl-cmd", "dev-info" or "params".
-- @return table (fields with offsets, warnings) | nil, msg
function M.decode(kind, bytes)
  return decode.decode(kind, bytes)
end

--- What the running kernel supports for ublk, and why not: { ok, checks = { {name, ok, detail}, ... } }
function M.doctor()
  return require("ublk.doctor").run(M, control.state)
end

return M
