-- Stopping a device whose Lua side this thread serves, on the real ublk driver, while handlers still
-- hold requests: the grace period, then EIO; a handler that deletes its own device; ublk.delete(id)
-- and a raw STOP_DEV from this very thread, which must serve instead of waiting for ever; the
-- collector stopping a handler device and a hooked one; and nothing left afterwards.
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
local core = ublk.core

local TMP = run.TMP
local sh = disk.sh
local ok_serving = serve.ok_serving
local sector_store, dd_read = serve.sector_store, serve.dd_read

describe("Lua handlers on the real driver", function()
  local nothing_left = serve.track()

  describe("handlers that do unusual things", function()
    it("get EIO for what they hold when ublk.delete(id) deletes their device from the same thread, which does not wait for ever", function()
      local held
      serve.device({ size = "8M", handler = { read = function(req)
        if req.offset == 2^22 then held = req:defer() end -- never answered by the handler
      end } }, function(dev)
        local j = job.start(dd_read(dev.path, 2^22))
        serve.dispatch_until(dev, function() return held end, "the read at 4 MiB reached its handler")
        assert.is_not_nil(held, "the read reached the handler")
        local t = core.monotonic()
        assert(ublk.delete(dev.id)) -- a plain DEL_DEV would wait for ever for the held read
        assert.is_true(core.monotonic() - t < 20, "the delete did not hang")
        assert.is_true(held:answered())
        assert.are.equal("ublk.device (deleted)", tostring(dev))
        local code, out = j:wait(30)
        j:cleanup()
        assert.are_not.equal(0, code)
        assert.matches("Input/output error", out)
      end)
    end)

    it("are served while a raw STOP_DEV from require(\"ublk.control\") waits for their requests", function()
      local control = require("ublk.control")
      local served = 0
      serve.device({ size = "8M", handler = { read = function(req)
        if req.offset == 2^20 then served = served + 1 end
        req.buf:fill(7)
      end } }, function(dev)
        serve.serve_one_read(dev)
        local j = job.start(("dd if=%s bs=4096 count=1 skip=256 iflag=direct 2>/dev/null | od -An -tu1 | head -1")
          :format(dev.path))
        serve.wait_in_flight(dev) -- not dispatching: only the STOP_DEV below can let this thread answer it
        assert.are.equal(0, served)
        local t = core.monotonic()
        -- STOP_DEV waits for the read in flight, which only this thread serves: without an idle
        -- function of the caller's, control.command must serve the device itself, or wait for ever
        assert(control.command("STOP_DEV", { dev_id = dev.id }))
        assert.is_true(core.monotonic() - t < 20, "the STOP_DEV took " .. (core.monotonic() - t) .. " s")
        assert.are.equal(1, served)
        local code, out = j:wait(30)
        j:cleanup()
        assert.are.equal(0, code, out)
        assert.matches("^%s*7%s+7%s+7", out) -- the handler's bytes, not an error
        assert(dev:delete())
        assert.are.same({}, kernel.ublk_devices())
      end)
    end)

    it("may delete their own device: what is still held is answered EIO", function()
      local dev, deleted
      -- not served through serve.device: the handler needs its device
      dev = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then deleted = dev:delete() end
          req.buf:fill(0)
        end,
      }, log = function() end })
      assert(dev:start())
      local j = job.start(dd_read(dev.path, 2^20))
      local t0 = ublk.now()
      local code, out = j:wait(60, function() if serve.live(dev) then dev:dispatch(0.02) else ublk.sleep(0.02) end end)
      j:cleanup()
      assert.is_true(deleted)
      assert.are.equal("ublk.device (deleted)", tostring(dev))
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
      assert.is_true(ublk.now() - t0 < 20)
      assert.are.same({}, kernel.ublk_devices())
    end)
  end)

  describe("stopping", function()
    it("answers EIO for requests a handler still holds after the grace period, and leaves nothing", function()
      local log, held = {}, 0
      serve.device({ size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then held = held + 1; ublk.sleep(600) end -- not the partition scan's
          req.buf:fill(0)
        end,
      }, log = function(line) log[#log + 1] = line end }, function(dev)
        local j = job.start(dd_read(dev.path, 2^20))
        serve.dispatch_until(dev, function() return held > 0 end, "the read at 1 MiB reached its handler")
        assert.are.equal(1, dev:stats().lua.held)
        local t0 = ublk.now()
        assert(dev:delete())
        assert.is_true(ublk.now() - t0 < 15, "delete took " .. (ublk.now() - t0) .. " s")
        local code, out = j:wait(30)
        j:cleanup()
        assert.are_not.equal(0, code)
        assert.matches("Input/output error", out)
        assert.matches("stopping: 1 requests still with handlers after 5 s were answered EIO", table.concat(log, "\n"))
        assert.are.same({}, kernel.ublk_devices())
      end)
    end)

    it("a handler device left to the collector is stopped and deleted", function()
      do
        local dev = assert(ublk.new { size = "8M", queues = 2, handler = sector_store() })
        assert(dev:start())
        ok_serving(dev, "dd if=/dev/zero of=" .. dev.path .. " bs=64k count=4 oflag=direct 2>/dev/null")
      end
      collectgarbage()
      collectgarbage()
      assert.are.same({}, kernel.ublk_devices())
    end)

    it("a hooked device left to the collector is stopped and deleted; its ring's C work is still done, its hooked requests fail", function()
      local img = TMP .. "/collected.img"
      sh("dd if=/dev/urandom of=" .. img .. " bs=1M count=8 2>/dev/null")
      local j, w
      do
        local dev = assert(ublk.new { target = "file", path = img, hooks = { write = function() end } })
        assert(dev:start())
        serve.serve_one_read(dev)
        j = job.start(("dd if=%s of=%s.read bs=4k count=1 skip=10 iflag=direct"):format(dev.path, img))
        w = job.start(("dd if=/dev/zero of=%s bs=4k count=1 seek=20 oflag=direct 2>&1"):format(dev.path))
        serve.wait_in_flight(dev, true) -- nobody dispatches for them
      end
      collectgarbage()
      collectgarbage()
      assert.are.same({}, kernel.ublk_devices())
      -- the hooked write came to the ring with no Lua left to run its hook: EIO, not a hang
      local wcode, wout = w:wait(30)
      w:cleanup()
      assert.are_not.equal(0, wcode)
      assert.matches("Input/output error", wout)
      local code, _, err = j:wait(30)
      j:cleanup()
      assert.are.equal(0, code, err)
      -- the unhooked read went to the file target while the collector's STOP_DEV waited
      assert.are.equal(sh(("dd if=%s bs=4k count=1 skip=10 2>/dev/null | md5sum"):format(img)), sh("md5sum < " .. img .. ".read"))
      os.remove(img)
      os.remove(img .. ".read")
    end)
  end)

  it("leaves no fd, thread or device behind", nothing_left)
end)
