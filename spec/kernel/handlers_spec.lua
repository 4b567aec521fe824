-- A device written in Lua, on the real ublk driver: fio verification through a Lua disk, what a
-- handler's return means to the kernel, failures answered EIO and logged once, the ops a handler
-- table lacks refused by the kernel, and buffers that die with their request.
--
-- The device is served by this very Lua thread, so the commands that use it run in the background
-- (support.serve) while the spec dispatches.
local kernel = require("support.kernel")
local disk = require("support.disk")
kernel.require_driver()
local serve = require("support.serve")
local ublk = require("ublk")

local serving, ok_serving = serve.serving, serve.ok_serving
local sector_store, dd_read = serve.sector_store, serve.dd_read
local fio_command = disk.fio_command
local threads = kernel.threads

describe("Lua handlers on the real driver", function()
  local nothing_left = serve.track()

  describe("a device written in Lua", function()

    for _, threaded in ipairs { false, true } do
      it(("passes fio verification over both queues, 512 B to 512 KiB, depth 1 to 64, hand-offs batched (%s)")
        :format(threaded and "queue_threads = true: a thread per queue" or "the Lua thread serves the queue rings"), function()
        local before = threads()
        local h = sector_store()
        serve.device({ size = "32M", queues = 2, depth = 64, handler = h, queue_threads = threaded }, function(dev)
          -- a thread per queue (the kernel may have lowered queues to the CPU count), or none
          assert.are.equal(before + (threaded and assert(dev:info()).queues or 0), (threads()))
          disk.fio_ok(ok_serving(dev, fio_command(dev.path, { rw = "randwrite", bs = "512-512k", depth = 64, jobs = 2 })))
          disk.fio_ok(ok_serving(dev, fio_command(dev.path, { rw = "write", bs = "64k", depth = 1, jobs = 2, size = "4m" })))
          local st = dev:stats()
          local sum = 0
          for q, s in ipairs(st.queues) do
            assert.is_true(s.requests > 0, "queue " .. q .. " served")
            assert.are.equal(0, s.errors)
            sum = sum + s.requests
          end
          -- every request went to Lua (the table has read and write; the kernel sends nothing else)
          assert.are.equal(sum, st.lua.requests)
          assert.are.equal(0, st.lua.errors)
          assert.are.equal(0, st.lua.held)
          assert.is_true(st.lua.batches < st.lua.requests, ("hand-offs carry several requests: %d requests in %d batches")
            :format(st.lua.requests, st.lua.batches))
        end)
      end)
    end

    it("answers what a handler returns: nothing, a string, a byte count, an errno name or number, or EIO", function()
      local mode, seen, log = nil, {}, {}
      local behave = {
        string = function(req) return string.rep("S", req.length) end,
        enospc = function() return nil, "ENOSPC" end,
        enodata = function() return nil, 61 end,
        enodata_name = function() return nil, "ENODATA" end, -- one the block layer passes on (a medium error)
        raise = function() error("boom") end,
        table = function() return {} end,
        short = function() return "too short" end,
        -- the same after a wait (the handler's runner is then its own)
        late_raise = function() ublk.sleep(0.01); error("late boom") end,
        late_enospc = function() ublk.sleep(0.01); return nil, "ENOSPC" end,
        late_fraction = function() ublk.sleep(0.01); return 2.5 end,
        bytes = function(req) -- 512 bytes at a time: the kernel asks again for the rest
          seen[#seen + 1] = req.offset
          req.buf:fill(66, 0, 512)
          return 512
        end,
      }
      serve.device({ size = "8M", handler = {
        read = function(req)
          if behave[mode] then return behave[mode](req) end
          req.buf:fill(0)
        end,
      }, log = function(line) log[#log + 1] = line end }, function(dev)
        local function read_as(m, offset)
          mode = m
          local code, out = serving(dev, dd_read(dev.path, offset or 0) .. " && dd if=" .. dev.path
            .. (" bs=4096 count=1 skip=%d iflag=direct,skip_bytes 2>/dev/null | od -An -c | head -2"):format(offset or 0))
          mode = nil
          return code, out
        end
        -- a read the handler fails in mode m: the reader sees the errno's text
        local function fails(m, text, offset)
          local code, out = read_as(m, offset)
          assert.are_not.equal(0, code, out)
          assert.matches(text, out)
        end
        local code, out = read_as("string")
        assert.are.equal(0, code, out)
        assert.matches("\n%s+S%s+S%s+S", out)
        fails("enospc", "No space left on device")
        fails("enodata", "No data available")
        fails("enodata_name", "No data available")
        fails("raise", "Input/output error", 8192)
        assert.are.equal(1, #log)
        assert.matches("^read handler failed at offset 8192, length 4096: answered EIO\n", log[1])
        assert.matches("handlers_spec.lua:%d+: boom\nstack traceback:\n", log[1])
        fails("table", "Input/output error")
        assert.are.equal("read handler at offset 0, length 4096 returned a table: answered EIO", log[2])
        fails("short", "Input/output error")
        assert.are.equal("read handler at offset 0, length 4096 returned a string of 9 bytes for a read of 4096: answered EIO", log[3])
        code, out = read_as("bytes", 4096)
        assert.are.equal(0, code, out)
        assert.matches("\n%s+B%s+B%s+B", out)
        assert.are.same({ 4096, 4608, 5120, 5632, 6144, 6656, 7168, 7680 }, { table.unpack(seen, 1, 8) })
        fails("late_raise", "Input/output error", 12288)
        assert.matches("^read handler failed at offset 12288, length 4096: answered EIO\n", log[4])
        assert.matches("handlers_spec.lua:%d+: late boom\nstack traceback:\n", log[4])
        fails("late_enospc", "No space left on device")
        fails("late_fraction", "Input/output error")
        assert.are.equal("read handler at offset 0, length 4096 returned 2.5, not a whole number of bytes: answered EIO", log[5])
        -- and after all that the device serves as before
        code, out = read_as(nil)
        assert.are.equal(0, code, out)
        assert.matches("\n%s+\\0%s+\\0", out)
        local st = dev:stats()
        assert.is_true(st.lua.errors >= 8)
        assert.are.equal(5, st.lua.failures) -- raised (twice), a table, a short string, a fraction; errnos are answers
      end)
    end)

    it("logs a failing handler once with its traceback, counts the repeats, and keeps serving", function()
      local log = {}
      serve.device({ size = "8M", handler = {
        read = function(req)
          -- one message for every failing read (the first MiB, which the partition scan reads, serves)
          if req.offset >= 2^20 and req.offset < 2^21 then error("bad sector 0") end
          req.buf:fill(7)
        end,
      }, log = function(line) log[#log + 1] = line end }, function(dev)
        local t0 = ublk.now()
        local code, out = serving(dev, "for i in $(seq 256 285); do dd if=" .. dev.path
          .. " bs=4096 count=1 skip=$i iflag=direct >/dev/null 2>&1 && exit 1; done; "
          .. "dd if=" .. dev.path .. " bs=4096 count=1 skip=1024 iflag=direct 2>/dev/null | od -An -tu1 | head -1")
        local took = ublk.now() - t0
        assert.are.equal(0, code, out)
        assert.matches("^%s+7%s+7%s+7", out)
        assert.matches("bad sector 0\nstack traceback:", log[1])
        -- the repeats are counted, not logged: at most a line summing them up every 10 s (a slow
        -- machine takes more than 10 s for the 30 reads)
        local all = table.concat(log, "\n---\n")
        assert.is_true(#log <= 1 + math.floor(took / 10), ("%d lines in %.1f s:\n%s"):format(#log, took, all))
        for i = 2, #log do
          assert.matches("^read handler: [^\n]*bad sector 0 %(%d+ more times in %d+ s%)$", log[i])
        end
        assert.are.equal(30, dev:stats().lua.failures)
        assert.are.equal(30, dev:stats().lua.errors)
      end)
    end)

    it("tells the kernel which ops the handler table lacks", function()
      -- not served through serve.device: the parameters are read before the start
      local dev <close> = assert(ublk.new { size = "8M", handler = { read = function(req) req.buf:fill(0) end } })
      local p = dev:params()
      assert.is_true(p.read_only)
      assert.is_false(p.volatile_cache)
      assert.is_false(p.discard)
      assert(dev:start())
      local code, out = serving(dev, "dd if=/dev/zero of=" .. dev.path .. " bs=4k count=1 oflag=direct 2>&1")
      assert.are_not.equal(0, code)
      assert.matches("Operation not permitted", out)
      code, out = serving(dev, "blkdiscard " .. dev.path .. " 2>&1")
      assert.are_not.equal(0, code)
      assert.matches("not supported", out)

      local ops = {}
      local h = sector_store()
      local rw = { read = h.read, write = h.write,
        flush = function(req) ops[#ops + 1] = req.op end,
        discard = function(req)
          ops[#ops + 1] = ("%s %d+%d"):format(req.op, req.offset, req.length)
          return req.length -- bytes done: taken for an op without data too
        end }
      local dev2 <close> = assert(ublk.new { size = "8M", handler = rw })
      p = dev2:params()
      assert.is_false(p.read_only)
      assert.is_true(p.volatile_cache)
      assert.is_true(p.discard)
      assert(dev2:start())
      ok_serving(dev2, "dd if=/dev/urandom of=" .. dev2.path .. " bs=4k count=4 conv=fsync 2>/dev/null && blkdiscard -o 1048576 -l 65536 " .. dev2.path)
      assert.truthy(table.concat(ops, ","):find("flush", 1, true), table.concat(ops, ","))
      assert.truthy(table.concat(ops, ","):find("discard 1048576+65536", 1, true), table.concat(ops, ","))
    end)

    it("gives a handler a view of the request's buffer that dies with the request", function()
      local kept, checks = {}, {}
      serve.device({ size = "8M", handler = {
        read = function(req)
          kept.req, kept.buf = req, req.buf
          checks.len, checks.op, checks.offset, checks.length = #req.buf, req.op, req.offset, req.length
          checks.fua, checks.queue, checks.received = req.fua, req.queue, req.received
          checks.now = ublk.now()
          req.buf:fill(0x61)
          req.buf:write(10, "xyz")
          checks.read = req.buf:read(9, 5)
          checks.past = select(2, pcall(req.buf.read, req.buf, req.length - 2, 4))
          checks.outside = select(2, pcall(req.buf.write, req.buf, -1, "a"))
          checks.byte = select(2, pcall(req.buf.fill, req.buf, 256))
        end,
      } }, function(dev)
        local out = ok_serving(dev, "dd if=" .. dev.path .. " bs=8192 count=1 skip=3 iflag=direct 2>/dev/null | head -c 16")
        assert.are.equal("aaaaaaaaaaxyzaaa", out)
        assert.are.equal(8192, checks.len)
        assert.are.equal("read", checks.op)
        assert.are.equal(3 * 8192, checks.offset)
        assert.are.equal(8192, checks.length)
        assert.is_false(checks.fua)
        assert.is_true(checks.queue == 0)
        assert.is_true(checks.received <= checks.now and checks.received > checks.now - 5)
        assert.are.equal("axyza", checks.read)
        assert.matches("buf:read: 4 bytes at offset 8190 run past the buffer's 8192", checks.past)
        assert.matches("buf:write: offset %-1 is outside the buffer %(0 to 8192%)", checks.outside)
        assert.matches("a byte is 0 to 255", checks.byte)
        -- the request was answered: what was kept of it is dead
        assert.has_error(function() kept.buf:read(0, 1) end, "buf:read: the request was already answered: its buffer is gone")
        assert.has_error(function() return #kept.buf end, "#buf: the request was already answered: its buffer is gone")
        assert.has_error(function() kept.req:done() end, "req:done: the request was already answered (read at offset 24576)")
        assert.is_true(kept.req:answered())
        assert.matches("^ublk.request %(read offset 24576 length 8192, queue 0 tag %d+, answered%)$", tostring(kept.req))
        assert.are.equal(kept.req, kept.buf) -- the request is its own buffer: one object per request
        assert.has_error(function() kept.req.offset = 0 end,
          "req.offset: a request's fields cannot be set (keep what you need in a table keyed by req)")
        assert.are.equal(24576, kept.req.offset) -- the fields outlive the answer (failure reports use them)
        assert.are.equal("ublk.request", getmetatable(kept.req))
        local index = debug.getmetatable(kept.req).__index -- reachable only through the debug library
        assert.has_error(function() index(io.stdout, "op") end, "req.field: not a ublk request")
        -- nor does the device lead to its metatable or its private C methods (ublk.device's alone)
        assert.are.equal("ublk.device", getmetatable(dev))
        local seen = {}
        local function no_internals(t, path, depth)
          if type(t) ~= "table" or seen[t] or depth > 3 then return end
          seen[t] = true
          for k, v in pairs(t) do
            assert.is_false(type(v) == "function" and (k == "serve" or k == "adopt" or k == "forget"
              or k == "stop_queues" or k == "abandon"), path .. "." .. tostring(k) .. " reaches the device's internals")
            no_internals(v, path .. "." .. tostring(k), depth + 1)
          end
        end
        for _, k in ipairs { "sched", "options", "target" } do no_internals(dev[k], "dev." .. k, 1) end
      end)
    end)
  end)

  it("leaves no fd, thread or device behind", nothing_left)
end)
