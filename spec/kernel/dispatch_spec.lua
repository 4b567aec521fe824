-- Who dispatches a device written in Lua, on the real ublk driver: a luv loop through dev:fd() and
-- dev:dispatch(), and handlers that dispatch again themselves (with control commands and a broken
-- log meanwhile, no request lost; a nested dispatch that leaves requests listed leaves dev:fd()
-- readable for the event loop).
--
-- The device is served by this very Lua thread, so the commands that use it run in the background
-- (support.serve) while the spec dispatches.
local kernel = require("support.kernel")
local job = require("support.job")
local disk = require("support.disk")
local run = require("support.run")
kernel.require_driver()
local serve = require("support.serve")
local ublk = require("ublk")
local uv = require("luv") -- loaded before the fd count below: its loop keeps descriptors
local core = ublk.core

local TMP = run.TMP
local serving, ok_serving = serve.serving, serve.ok_serving
local sector_store, dd_read = serve.sector_store, serve.dd_read
local fio_command = disk.fio_command

describe("Lua handlers on the real driver", function()
  local nothing_left = serve.track()

  it("serves inside a luv loop through dev:fd() and dev:dispatch()", function()
    local h = sector_store()
    local slept = 0
    local read = h.read
    h.read = function(req)
      if req.offset % 65536 == 0 then ublk.sleep(0.01); slept = slept + 1 end -- the timer works in luv too
      return read(req)
    end
    -- not served through serve.device: the descriptors are counted between the creation and the start
    local dev <close> = assert(ublk.new { size = "16M", queues = 2, handler = h })
    local fds_before = kernel.fd_count()
    assert(dev:start())
    local j = job.start(fio_command(dev.path, { rw = "randwrite", bs = "4k-64k", depth = 16, jobs = 2, size = "8m" }))
    local dispatches = 0
    local poll = uv.new_poll(dev:fd())
    poll:start("r", function() dispatches = dispatches + 1; dev:dispatch() end)
    local timer = uv.new_timer()
    local deadline = ublk.now() + 120
    timer:start(20, 20, function() if j:status() or ublk.now() > deadline then uv.stop() end end)
    uv.run()
    poll:stop(); poll:close(); timer:stop(); timer:close()
    uv.run("nowait")
    local code = j:status()
    local out, err = j:stdout(), j:stderr()
    if not code then j:kill() end
    j:cleanup()
    assert(code, "fio did not end within 120 s of the luv loop serving it:\n" .. out .. err)
    assert.are.equal(0, code, out .. err)
    disk.fio_ok(out)
    assert.is_true(dispatches > 0)
    assert.is_true(slept > 0, "a handler slept")
    assert.are.equal(0, dev:stats().lua.errors)
    -- a stop closes every descriptor the device served with, dev:fd()'s included, before any delete
    assert(dev:stop())
    assert.are.equal(fds_before, kernel.fd_count())
    assert.has_error(function() dev:fd() end, "dev:fd: the device was stopped: it has no Lua work to poll for any more")
  end)

  describe("handlers that do unusual things", function()
    it("may dispatch again, send control commands and break the log, and no request is lost", function()
      local h = sector_store()
      local dev, info, nested, logged = nil, nil, 0, 0
      local read = h.read
      h.read = function(req)
        info = info or assert(dev:info()) -- a control command, maybe while START_DEV waits
        if req.offset % 8192 == 0 then nested = nested + 1; dev:dispatch() end
        if req.offset >= 2^20 and req.offset < 2^20 + 4096 then error("this sector is cursed") end
        return read(req)
      end
      -- not served through serve.device: the handler needs its device during the start
      dev = assert(ublk.new { size = "16M", queues = 2, depth = 32, handler = h,
        log = function() logged = logged + 1; error("the log is broken too") end })
      assert(dev:start())
      disk.fio_ok(ok_serving(dev, fio_command(dev.path, { rw = "randwrite", bs = "4k-64k", depth = 32, jobs = 2, size = "4m" })
        .. " --offset=2m"))
      local code, out = serving(dev, dd_read(dev.path, 2^20))
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
      assert.are.equal(dev.id, info.id)
      assert.is_true(nested > 0)
      assert.is_true(logged >= 1)
      local st = dev:stats()
      assert.are.equal(0, st.lua.held)
      assert.are.equal(1, st.lua.failures)
      assert(dev:delete())
    end)

    for _, threaded in ipairs { false, true } do
      it(("leave dev:fd() readable when a nested dispatch leaves requests listed (%s)")
        :format(threaded and "queue threads" or "the Lua thread's own rings"), function()
        local M, dev, seen = 2^20, nil, {}
        local blocking = TMP .. "/nested-blocking"
        os.remove(blocking)
        dev = assert(ublk.new { size = "8M", max_io = 4096, queue_threads = threaded, handler = {
          read = function(req)
            if req.offset < 4 * M or req.offset >= 7 * M then return end -- udev's probes of the new disk
            seen[#seen + 1] = req.offset
            if req.offset == 4 * M then
              assert(io.open(blocking, "w")):close() -- the third read may come now
              -- blocking, not dispatching: the third read arrives meanwhile, and reaches this thread
              serve.wait_in_flight(dev, false, 3)
              serve.wait_until(function() return serve.has_work(dev) end, "the third read reached the device's Lua side (dev:fd() readable)")
              dev:dispatch(0) -- runs the rest of this batch (the second read), not the third
            end
          end,
        } })
        assert(dev:start())
        serve.serve_one_read(dev) -- the partition scan is done
        serve.dispatch_until_idle(dev, "after the first read")
        -- an 8 KiB read: two 4 KiB requests that wait together until the dispatch below takes both;
        -- a third read once the first one's handler blocks
        local j1 = job.start(dd_read(dev.path, 4 * M, 8192))
        local j2 = job.start(("while [ ! -e %s ]; do sleep 0.05; done; %s"):format(blocking, dd_read(dev.path, 6 * M)))
        -- the first is there
        serve.wait_until(function() return serve.has_work(dev) end, "the 8 KiB read reached the device (dev:fd() readable)")
        serve.wait_in_flight(dev, false, 2) -- and the second, split from the same read
        dev:dispatch(1)
        os.remove(blocking)
        assert.are.same({ 4 * M, 4 * M + 4096 }, seen)
        -- the third is listed, not run: the descriptor an event loop waits on must say so
        assert.are.equal(1, core.poll(0, dev:fd(), 1) & 1)
        local code, out = j2:wait(30, function() dev:dispatch(0.02) end)
        assert.are.equal(0, code, out)
        assert.are.same({ 4 * M, 4 * M + 4096, 6 * M }, seen)
        assert.are.equal(0, (j1:wait(30, function() dev:dispatch(0.02) end)))
        j1:cleanup(); j2:cleanup()
        assert(dev:delete())
      end)
    end
  end)

  it("leaves no fd, thread or device behind", nothing_left)
end)
