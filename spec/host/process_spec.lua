-- How ublk.delete(id) tells that a device's server has ended, after its SIGTERM (no kernel needed).
local device = require("ublk.device")
local core = require("ublk.core")

describe("a server's end, as ublk.delete waits for it", function()
  local ended = device.process_ended

  it("is not seen in a live process", function()
    assert.is_false(ended(core.getpid()))
  end)

  it("is seen in a process that is gone", function()
    local f = assert(io.open("/proc/sys/kernel/pid_max"))
    local pid_max = assert(tonumber(f:read("l")))
    f:close()
    assert.is_true(ended(pid_max + 1))
  end)

  it("is seen in a zombie nobody has reaped yet", function()
    -- the shell's background child ends once told to, when the shell has become `sleep`, which
    -- never reaps it (a shell that is still a shell may reap it first)
    local go = os.tmpname()
    os.remove(go)
    local p = assert(io.popen(("exec sh -c '(while [ ! -e %s ]; do sleep 0.01; done) & echo $! $$; exec sleep 60'"):format(go)))
    local pid, parent = p:read("n", "n")
    local function comm(of)
      local f = io.open(("/proc/%d/comm"):format(of))
      local name = f and f:read("l")
      if f then f:close() end
      return name
    end
    local deadline = core.monotonic() + 20
    while comm(parent) ~= "sleep" and core.monotonic() < deadline do core.sleep(0.01) end
    assert.are.equal("sleep", comm(parent))
    assert(io.open(go, "w")):close()
    local state
    repeat
      local stat = io.open(("/proc/%d/stat"):format(pid))
      state = stat and stat:read("a"):match("^%d+ %b() (%a)")
      if stat then stat:close() end
      if state ~= "Z" then core.sleep(0.01) end
    until state == "Z" or core.monotonic() > deadline
    assert.are.equal("Z", state, "the child never became a zombie")
    assert.is_true(ended(pid))
    core.kill(parent, core.SIGTERM) -- the sleep; its zombie child goes with it
    p:close()
    os.remove(go)
  end)

  it("is seen when the process is reaped between the open of its stat and the read", function()
    -- what `ublk del --all` met in the VM (1 try in 15): the read fails with ESRCH, and
    -- f:read returns nil, which used to raise "attempt to index a nil value" and leave devices
    local real_open = io.open
    local closed = false
    io.open = function(path, ...)
      if path:match("^/proc/%d+/stat$") then
        return { read = function() return nil, "No such process", 3 end, close = function() closed = true end }
      end
      return real_open(path, ...)
    end
    local ok, res = pcall(ended, core.getpid())
    io.open = real_open
    assert.is_true(ok, res)
    assert.is_true(res)
    assert.is_true(closed)
  end)
end)
