-- Handlers that wait, on the real ublk driver: ublk.sleep while the device's other requests go on,
-- a descriptor that becomes readable (or a timeout), a request kept with req:defer() and answered
-- later with req:done(), and a plain coroutine.yield().
--
-- The device is served by this very Lua thread, so the commands that use it run in the background
-- (support.serve) while the spec dispatches.
local kernel = require("support.kernel")
local job = require("support.job")
local run = require("support.run")
kernel.require_driver()
local serve = require("support.serve")
local ublk = require("ublk")
local uv = require("luv") -- loaded before the fd count below: its loop keeps descriptors

local TMP = run.TMP
local serving, ok_serving = serve.serving, serve.ok_serving
local sector_store, dd_read = serve.sector_store, serve.dd_read

describe("Lua handlers on the real driver", function()
  local nothing_left = serve.track()

  describe("handlers that wait", function()

    it("sleep while the device's other requests go on", function()
      local inflight, most, served = 0, 0, 0
      serve.device({ size = "8M", queues = 2, depth = 32, handler = {
        read = function(req)
          inflight = inflight + 1
          most = math.max(most, inflight)
          ublk.sleep(0.2)
          inflight = inflight - 1
          served = served + 1
          req.buf:fill(0)
        end,
      } }, function(dev)
        ok_serving(dev, "fio --name=sleepy --filename=" .. dev.path .. " --direct=1 --ioengine=io_uring --rw=randread"
          .. " --bs=4k --iodepth=16 --io_size=256k --size=8m --output-format=terse >/dev/null")
        assert.is_true(served >= 64, "served " .. served)
        assert.is_true(most >= 8, ("at most %d requests were asleep at once"):format(most))
        assert.are.equal(0, inflight)
      end)
    end)

    it("wait for a descriptor to become readable, or for their timeout", function()
      local pipe = uv.pipe()
      local _ <close> = setmetatable({}, { __close = function() -- even when the spec fails
        uv.fs_close(pipe.read)
        uv.fs_close(pipe.write)
      end })
      local waiting, woke = 0, {}
      serve.device({ size = "8M", handler = {
        read = function(req)
          if req.offset < 2^20 then return req.buf:fill(0) end -- the partition scan
          waiting = waiting + 1
          local ready = ublk.readable(pipe.read, req.offset == 2^20 and 30 or 0.2)
          waiting = waiting - 1
          woke[#woke + 1] = ready
          if not ready then return nil, "ETIMEDOUT" end
          req.buf:fill(string.byte(uv.fs_read(pipe.read, 1)))
        end,
      } }, function(dev)
        local j = job.start("dd if=" .. dev.path .. " bs=4096 count=1 skip=256 iflag=direct 2>/dev/null | head -c 4")
        serve.dispatch_until(dev, function() return waiting > 0 end, "the read at 1 MiB reached its handler")
        assert.are.equal(1, waiting)
        -- another read is served meanwhile, then nothing is left to run: only the pipe can wake it
        serve.serve_one_read(dev)
        serve.dispatch_until_idle(dev, "the handler waits for the empty pipe")
        assert.are.same({}, woke) -- nothing written yet: still waiting
        uv.fs_write(pipe.write, "Z")
        local code, out = j:wait(30, function() dev:dispatch(0.02) end)
        j:cleanup()
        assert.are.equal(0, code)
        assert.are.equal("ZZZZ", out)
        assert.are.same({ true }, woke)
        code, out = serving(dev, dd_read(dev.path, 2^21))
        assert.are_not.equal(0, code)
        assert.matches("Connection timed out", out)
        assert.are.same({ true, false }, woke)
      end)
    end)

    it("keep a request and answer it later with req:done()", function()
      local h = sector_store()
      local later = {}
      local answered = 0
      serve.device({ size = "8M", handler = {
        read = h.read,
        write = function(req)
          later[#later + 1] = req:defer()
          return 1234 -- ignored: a deferred request is answered by req:done alone
        end,
      } }, function(dev)
        local j = job.start("dd if=/dev/urandom of=" .. TMP .. "/later bs=4k count=8 2>/dev/null && dd if="
          .. TMP .. "/later of=" .. dev.path .. " bs=4k oflag=direct 2>&1 && dd if=" .. dev.path
          .. " bs=4k count=8 iflag=direct 2>/dev/null | cmp - " .. TMP .. "/later")
        local code, out, err = j:wait(60, function()
          dev:dispatch(0.02)
          for i, req in ipairs(later) do
            later[i] = nil
            h.write(req)
            req:done()
            answered = answered + 1
            assert.has_error(function() req:done() end)
          end
        end)
        j:cleanup()
        assert.are.equal(0, code, out .. err)
        assert.are.equal(8, answered)
      end)
    end)

    it("yield plainly and run again on the next dispatch", function()
      local turns = 0
      serve.device({ size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then -- not the partition scan's
            for _ = 1, 3 do turns = turns + 1; coroutine.yield() end
          end
          req.buf:fill(1)
        end,
      } }, function(dev)
        ok_serving(dev, dd_read(dev.path, 2^20))
        assert.are.equal(3, turns)
      end)
    end)
  end)

  it("leaves no fd, thread or device behind", nothing_left)
end)
