-- Lua hooks on a C target (the file target), on the real ublk driver: hooks that fail, delay, answer
-- or pass the requests of the ops they name, fio through a pass-through hook, the ops they do not
-- name left to the C target (on the Lua thread's dispatch, or on queue threads), and no Lua at all
-- on a device without hooks. Each served by the Lua thread's own rings and by queue threads.
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
local serving, ok_serving = serve.serving, serve.ok_serving
local threads = kernel.threads

describe("Lua handlers on the real driver", function()
  local nothing_left = serve.track()

  describe("hooks on a C target", function()
    local img = TMP .. "/hooks.img"
    before_each(function() sh("dd if=/dev/urandom of=" .. img .. " bs=1M count=8 2>/dev/null") end)
    after_each(function() os.remove(img) end)

    for _, threaded in ipairs { false, true } do
      local mode = threaded and "queue_threads = true: a thread per queue" or "the Lua thread serves the queue rings"
      it(("fail, delay, answer or pass each request of the ops they name (%s)"):format(mode), function()
        local MiB = 2^20
        local calls = { read = 0, write = 0 }
        local before = threads()
        serve.device({ target = "file", path = img, queue_threads = threaded, hooks = {
          write = function(req)
            calls.write = calls.write + 1
            if req.offset >= MiB and req.offset < 2 * MiB then return nil, "EIO" end
          end,
          read = function(req)
            calls.read = calls.read + 1
            if req.offset >= 2 * MiB and req.offset < 3 * MiB then
              ublk.sleep(0.3)
              return "pass"
            elseif req.offset == 3 * MiB then
              return string.rep("H", req.length)
            end
          end,
        } }, function(dev)
          assert.are.equal(before + (threaded and 1 or 0), (threads()))
          local code, out = serving(dev, ("dd if=/dev/zero of=%s bs=4k count=1 seek=%d oflag=direct 2>&1"):format(dev.path, 257))
          assert.are_not.equal(0, code)
          assert.matches("Input/output error", out)
          sh(("cmp -s -i %d:0 -n 4096 %s /dev/zero && exit 1 || true"):format(257 * 4096, img)) -- not written
          ok_serving(dev, ("dd if=/dev/zero of=%s bs=4k count=1 seek=%d oflag=direct 2>/dev/null"):format(dev.path, 1280))
          sh(("cmp -i %d:0 -n 4096 %s /dev/zero"):format(1280 * 4096, img)) -- passed: in the file
          local t0 = ublk.now()
          out = ok_serving(dev, ("dd if=%s bs=4k count=1 skip=%d iflag=direct 2>/dev/null | md5sum"):format(dev.path, 600))
          assert.is_true(ublk.now() - t0 >= 0.3, "the read was delayed")
          assert.are.equal(sh(("dd if=%s bs=4k count=1 skip=600 2>/dev/null | md5sum"):format(img)), out)
          out = ok_serving(dev, ("dd if=%s bs=4k count=1 skip=%d iflag=direct 2>/dev/null | head -c 8"):format(dev.path, 768))
          assert.are.equal("HHHHHHHH", out)
          local st = dev:stats()
          assert.is_true(calls.read >= 2 and calls.write == 2)
          assert.is_true(st.lua.passed >= 2)
          assert.are.equal(st.lua.requests, calls.read + calls.write)
        end)
      end)

      it(("pass everything they return nothing for: fio verifies through a pass-through write hook (%s)"):format(mode), function()
        local hooked = 0
        local before = threads()
        serve.device({ target = "file", path = img, queues = 2, queue_threads = threaded,
          hooks = { write = function() hooked = hooked + 1 end } }, function(dev)
          assert.are.equal(before + (threaded and assert(dev:info()).queues or 0), (threads()))
          local function served()
            local sum = 0
            for _, q in ipairs(dev:stats().queues) do sum = sum + q.requests end
            return sum
          end
          local served_before = served() -- the partition scan's reads
          disk.fio_ok(ok_serving(dev, disk.fio_command(dev.path, { rw = "randwrite", bs = "4k-128k", depth = 32, jobs = 2, size = "4m" })))
          local st = dev:stats()
          assert.is_true(hooked > 0)
          assert.are.equal(hooked, st.lua.passed)
          assert.are.equal(hooked, st.lua.requests) -- reads never went to Lua
          assert.are.equal(0, st.lua.errors)
          -- fio read back all it wrote (verified), through the C target alone: besides the writes, at
          -- least one read per 512 KiB (the largest request) of the 2 x 4 MiB
          assert.is_true(served() - served_before >= hooked + 16, ("%d requests for %d writes"):format(served() - served_before, hooked))
        end)
      end)
    end

    for _, threaded in ipairs { false, true } do
      it(("leave the ops they do not name to %s"):format(threaded and "the queue threads (queue_threads = true)"
          or "the Lua thread's dispatch"), function()
        serve.device({ target = "file", path = img, queue_threads = threaded,
          hooks = { write = function() end } }, function(dev)
          serve.serve_one_read(dev)
          local served = dev:stats().queues[1].requests
          -- a read (never hooked) while this thread does not dispatch
          local j = job.start(("dd if=%s of=/dev/null bs=4k count=1 skip=10 iflag=direct"):format(dev.path))
          if threaded then
            assert.are.equal(0, (j:wait(30, function() core.sleep(0.02) end)), "a queue thread served the read")
            assert.is_true(dev:stats().queues[1].requests > served)
          else
            serve.wait_in_flight(dev)
            assert.are.equal(1, core.poll(5, dev:fd(), 1) & 1, "the read is in the ring")
            -- nothing but a dispatch serves it: it stays in flight, however long nobody dispatches
            serve.holds(function() return not j:status() and serve.in_flight(dev) >= 1 end, 0.5,
              "the read stays in flight while this thread does not dispatch")
            assert.is_nil(j:status(), "the read waits for a dispatch")
            assert.are.equal(served, dev:stats().queues[1].requests)
            assert.are.equal(0, (j:wait(30, function() dev:dispatch(0.02) end)))
            assert.is_true(dev:stats().queues[1].requests > served)
          end
          j:cleanup()
          assert.are.equal(0, dev:stats().lua.requests)
        end)
      end)
    end

    it("are absent from a device without them: its requests never reach Lua", function()
      serve.device({ target = "file", path = img }, function(dev)
        sh("dd if=" .. dev.path .. " of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null")
        assert.is_nil(dev:stats().lua)
        assert.has_error(function() dev:dispatch() end, "dev:dispatch: this device has no handler or hooks, or is not started")
      end)
    end)
  end)

  it("leaves no fd, thread or device behind", nothing_left)
end)
