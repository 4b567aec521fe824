-- Kernel specs need the real ublk driver. Without it they fail, loudly, every one of them: they are
-- never skipped. `make test` boots a VM with the driver when this machine has none.
local M = {}

function M.require_driver()
  local f, err = io.open("/dev/ublk-control", "r")
  if not f then
    error("this spec needs the ublk driver and /dev/ublk-control is not usable here (" .. tostring(err)
      .. "): run it through `make test`, which boots a kernel that has ublk", 0)
  end
  f:close()
end

--- The kernel series under test ("6.12", "7.3"), or nil when native.
M.series = os.getenv("UBLK_VM")

function M.fd_count()
  local n = 0
  local p = io.popen("ls /proc/" .. M.pid() .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1 -- the pipe to ls itself
end

function M.pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return pid
end

--- Our threads, not io_uring's own workers (iou-wrk-*, which the kernel retires when idle): how
-- many, and their names. A worker is told by its PF_IO_WORKER flag (0x10, the ninth field of its
-- stat), not only by its name: one still starting bears the process's name until it renames itself,
-- and counted as ours it made a spec file's count of threads one too many (a control command's
-- worker being created as the count was taken).
local PF_IO_WORKER = 0x10
function M.threads()
  local n, names = 0, {}
  local dir = "/proc/" .. M.pid() .. "/task/"
  local ls = io.popen("ls " .. dir)
  for tid in ls:lines() do
    -- its stat holds both: the name (in parentheses, as /proc/.../comm has it) and the flags
    local f = io.open(dir .. tid .. "/stat")
    local stat = f and f:read("a") or ""
    if f then f:close() end
    local comm = stat:match("^%d+ %((.*)%) ") or ""
    local flags = tonumber(stat:match("%) %S+ %S+ %S+ %S+ %S+ %S+ (%d+)")) or 0
    if not comm:match("^iou%-") and flags & PF_IO_WORKER == 0 then n = n + 1; names[#names + 1] = comm end
  end
  ls:close()
  return n, table.concat(names, ",")
end

--- What a spec file counted before its first device (kernel.fd_count(), kernel.threads()) is what
-- is left after the collector ran: no descriptor, thread or ublk device survives.
function M.assert_nothing_left(fds, nthreads)
  local luassert = require("luassert")
  collectgarbage()
  collectgarbage()
  luassert.are.equal(fds, M.fd_count())
  local n, names = M.threads()
  luassert.are.equal(nthreads, n, ("threads: %d before, %d now: %s"):format(nthreads, n, names))
  luassert.are.same({}, M.ublk_devices())
end

function M.ublk_devices()
  local ids = {}
  local p = io.popen("ls /sys/class/ublk-char 2>/dev/null")
  for name in p:lines() do ids[#ids + 1] = name end
  p:close()
  return ids
end

return M
