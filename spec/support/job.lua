-- Commands in the background, for specs whose device is served by this very Lua thread (a handler
-- or hooks: a blocking os.execute would leave its requests unanswered) and for the examples, which
-- serve in a process of their own.
local core = require("ublk.core")
local run = require("support.run")

local M = {}
local TMP = run.TMP
local count = 0
local slurp, quote = run.slurp, run.quote

local Job = {}
Job.__index = Job

--- Start `cmd` in a shell of its own session (so that :kill reaches its children). With
-- `ours`, it keeps the sanitizer runtime and the specs' build of ublk.core (our own scripts);
-- otherwise it runs without them (fio, dd, mkfs).
function M.start(cmd, ours)
  count = count + 1
  local base = ("%s/job-%s-%d"):format(TMP, core.getpid(), count)
  -- busted loads this module afresh for each spec file, so the count starts again: a job of an
  -- earlier file that failed before its cleanup left files of the same name, which must not be read
  for _, ext in ipairs { ".out", ".err", ".rc", ".rc.tmp", ".pid" } do os.remove(base .. ext) end
  local env = ours and run.ours_env() or run.PLAIN_ENV
  local script = ("(%s) </dev/null >%s.out 2>%s.err; echo $? >%s.rc.tmp; mv %s.rc.tmp %s.rc"):format(
    cmd, base, base, base, base, base)
  assert(os.execute(("%s setsid sh -c %s >/dev/null 2>&1 & echo $! >%s.pid"):format(env, quote(script), base)))
  local pid = tonumber(slurp(base .. ".pid"))
  return setmetatable({ base = base, pid = pid, cmd = cmd }, Job)
end

--- The exit status once the command has ended, else nil.
function Job:status()
  local rc = slurp(self.base .. ".rc")
  return rc and tonumber(rc)
end

function Job:stdout() return slurp(self.base .. ".out") or "" end
function Job:stderr() return slurp(self.base .. ".err") or "" end

--- Wait up to `timeout` seconds for the command to end, calling `tick()` (default: a short
-- sleep) meanwhile: a spec serving its own device passes function() dev:dispatch(0.02) end.
-- Returns the exit status, stdout, stderr; raises when it did not end in time (and kills it).
function Job:wait(timeout, tick)
  local deadline = core.monotonic() + (timeout or 120)
  tick = tick or function() core.sleep(0.02) end
  while not self:status() do
    if core.monotonic() > deadline then
      self:kill()
      error(("`%s` did not end within %g s:\n%s%s"):format(self.cmd, timeout or 120, self:stdout(), self:stderr()), 2)
    end
    tick()
  end
  return self:status(), self:stdout(), self:stderr()
end

--- Wait until stdout matches `pattern` (calling tick meanwhile); the captures, or an error that
-- shows what the command said when it ended or the time ran out first.
function Job:expect(pattern, timeout, tick)
  local deadline = core.monotonic() + (timeout or 30)
  tick = tick or function() core.sleep(0.02) end
  while true do
    local caps = { self:stdout():match(pattern) }
    if caps[1] then return table.unpack(caps) end
    if self:status() or core.monotonic() > deadline then
      error(("`%s` %s before printing %q:\n%s%s"):format(self.cmd,
        self:status() and ("exited " .. self:status()) or "timed out", pattern, self:stdout(), self:stderr()), 2)
    end
    tick()
  end
end

--- Send a signal (default KILL) to the whole session: the shell and what it started.
function Job:kill(signame)
  os.execute(("kill -%s -- -%d 2>/dev/null"):format(signame or "KILL", self.pid))
end

function Job:cleanup()
  for _, ext in ipairs { ".out", ".err", ".rc", ".pid" } do os.remove(self.base .. ext) end
end

return M
