--- Servers in the background. `ublk add` and `ublk recover` fork one and return once it reports the
-- device live, or why not; with `--restart` a supervisor sits between them and gives the device a
-- new server whenever one dies, with a bounded back-off.
--
-- The report is what the server writes to its pipe before closing it: "trace ..." lines (the
-- commands that brought the device up, with --trace), then "ready LINE" or "error REASON".
-- @module ublk.background
local core = require("ublk.core")

local M = {}

--- Restarts: more than LIMIT failures (a server that died, a recovery that failed) within WINDOW
-- seconds end the supervisor; the n-th failure in the window waits BACKOFF * 2^(n-2) s (at most
-- BACKOFF_MAX) before the next try, the first none.
M.LIMIT, M.WINDOW, M.BACKOFF, M.BACKOFF_MAX = 5, 60, 0.5, 5

--- The exit status of a server that handed its device over (`ublk upgrade`): the supervisor then
-- watches the new server instead.
M.HANDED_OVER = 3

-- After a hand-over: the new server's pid, once its run record names it (nil after 60 s).
local function successor(id, old)
  local records = require("ublk.records")
  local deadline = core.monotonic() + 60
  repeat
    local r = records.read(id)
    local pid = r and math.tointeger(tonumber(r.pid))
    if pid and pid ~= old and core.kill(pid, 0) then return pid end
    core.sleep(0.05)
  until core.monotonic() > deadline or not core.exists("/sys/class/ublk-char/ublkc" .. id)
end

-- Wait for a process that is not our child to end (it cannot be reaped here: polled).
local function outlived(pid)
  while core.kill(pid, 0) do core.sleep(0.1) end
end

--- Fork a server: `child(report_fd)` runs in a new session (stdin /dev/null, stdout and stderr to
-- `log` or /dev/null) and ends the process; this one waits for the report.
-- @return report, pid, status (the wait status if it has exited) | nil, msg
function M.fork(log, child)
  local role, report, pid, status = core.daemon(log)
  if role == nil then return nil, report end
  if role == "child" then
    local ok, why = xpcall(child, debug.traceback, report)
    if not ok then io.stderr:write("ublk: internal error: ", tostring(why), "\n") end
    os.exit(1)
  end
  return report, pid, status
end

--- Split a report: kind ("ready" or "error"), the line or reason, and the trace text.
function M.parse(report, pid, status)
  local traces, at = {}, 1
  while report:find("^trace ", at) do
    local stop = report:find("\n", at, true) or #report
    traces[#traces + 1] = report:sub(at + 6, stop)
    at = stop + 1
  end
  report = report:sub(at)
  local line = report:match("^ready (.-)\n")
  if line then return "ready", line, table.concat(traces) end
  local reason = (report:match("^error (.*)") or ""):gsub("\n$", "")
  if reason == "" then
    reason = ("the server (pid %d) exited before the device was live%s"):format(pid,
      status and (" (wait status %d)"):format(status) or "")
  end
  return "error", reason, table.concat(traces)
end

local function say(fmt, ...)
  io.stderr:write(os.date("%Y-%m-%d %H:%M:%S "), "ublk supervisor: ", fmt:format(...), "\n")
  io.stderr:flush()
end

local function ending(how, code)
  return how == "killed" and ("was killed by signal %d"):format(code) or ("exited with status %d"):format(code)
end

--- The supervisor, in the process `ublk add --restart` forked (never returns). `first(fd)` brings
-- the device up and serves it (as `ublk add`'s server does); its report goes on to `report_fd`, the
-- pipe `ublk add` waits on. Each time a server ends other than by a clean stop (exit status 0),
-- `recover(fd, id)` is forked to give the device a new server, until the device is gone or the
-- failures exceed the limit (logged, with the last reason; the device is left for `ublk recover`
-- or `ublk del`).
function M.supervise(report_fd, log, first, recover)
  local report, pid, status = M.fork(log, function(fd)
    core.notify(report_fd, "") -- the server's copy of the pipe to `ublk add`: only we write there
    first(fd)
  end)
  if not report then core.notify(report_fd, "error " .. pid .. "\n") os.exit(1) end
  local kind, text = M.parse(report, pid, status)
  core.notify(report_fd, report)
  if kind ~= "ready" then core.wait(pid) os.exit(1) end
  local id = assert(math.tointeger(tonumber(text:match("^ublk device (%d+):"))))
  say("device %d: serving with server pid %d; pid %d supervises it", id, pid, core.getpid())
  local failures = {}
  local last
  local adopted = false -- pid is a server that took the device over: not our child
  while true do
    local how, code
    if adopted then
      outlived(pid)
      how, code = "ended", nil
      -- a server that deleted its device has just gone: give the device a moment to vanish too
      local deadline = core.monotonic() + 2
      while core.exists("/sys/class/ublk-char/ublkc" .. id) and core.monotonic() < deadline do core.sleep(0.05) end
    else
      how, code = core.wait(pid)
    end
    if how == "exited" and code == M.HANDED_OVER then
      local next_pid = successor(id, pid)
      if next_pid then
        say("device %d: server pid %d handed the device over to pid %d, which is supervised now", id, pid, next_pid)
        pid, adopted = next_pid, true
        goto continue
      end
      how = "ended"
    end
    if how == "exited" and code == 0 or how == "ended" and not core.exists("/sys/class/ublk-char/ublkc" .. id) then
      say("device %d: server pid %d stopped cleanly; the supervisor ends", id, pid)
      os.exit(0)
    end
    adopted = false
    last = how == "ended" and ("server pid %d ended"):format(pid) or ("server pid %d %s"):format(pid, ending(how, code))
    repeat
      local now = core.monotonic()
      local kept = {}
      for _, t in ipairs(failures) do if now - t < M.WINDOW then kept[#kept + 1] = t end end
      kept[#kept + 1] = now
      failures = kept
      if #failures > M.LIMIT then
        say("device %d: giving up after %d failures in %d s (last: %s); the device is left without a server: "
          .. "ublk recover %d, or ublk del %d", id, #failures, M.WINDOW, last, id, id)
        os.exit(1)
      end
      if not core.exists("/sys/class/ublk-char/ublkc" .. id) then
        say("device %d: %s, and the device is gone; the supervisor ends", id, last)
        os.exit(0)
      end
      local wait = #failures > 1 and math.min(M.BACKOFF * 2 ^ (#failures - 2), M.BACKOFF_MAX) or 0
      say("device %d: %s; recovering%s", id, last, wait > 0 and (" in %g s"):format(wait) or "")
      core.sleep(wait)
      report, pid, status = M.fork(log, function(fd) recover(fd, id) end)
      if not report then
        last, pid = "fork: " .. tostring(pid), nil
      else
        kind, text = M.parse(report, pid, status)
        if kind ~= "ready" then
          last = "recovery failed: " .. text
          core.wait(pid)
          pid = nil
        else
          say("device %d: recovered: %s", id, text)
        end
      end
    until pid
    ::continue::
  end
end

return M
