-- Devices written in Lua, and Lua hooks on the C targets, on the real ublk driver: what a handler's
-- return means to the kernel, failures answered EIO and logged once, buffers that die with their
-- request, handlers that wait (sleep, a descriptor, req:done later), a luv loop driving a device, hooks
-- that fail, delay, answer or pass, and stopping with requests still in handlers.
--
-- The device is served by this very Lua thread, so the commands that use it run in the background
-- (support.job) while the spec dispatches.
local kernel = require("support.kernel")
local job = require("support.job")
local disk = require("support.disk")
local run = require("support.run")
kernel.require_driver()
local ublk = require("ublk")
local uv = require("luv") -- loaded before the fd count below: its loop keeps descriptors
local core = ublk.core

local TMP = run.TMP

-- A shell command that is not ours, run while this thread serves dev: status, stdout, stderr.
local function serving(dev, cmd, timeout)
  local j = job.start(cmd)
  local code, out, err = j:wait(timeout or 120, function() dev:dispatch(0.02) end)
  j:cleanup()
  return code, out, err
end

local function ok_serving(dev, cmd, timeout)
  return disk.succeeded(cmd, serving(dev, cmd, timeout))
end

local sh = disk.sh
local fio_command = disk.fio_command

-- A disk in a Lua table of 512-byte sectors: any size and alignment the kernel sends.
local function sector_store()
  local sectors = {}
  local h = {}
  function h.read(req)
    local buf, first = req.buf, req.offset // 512
    for i = 0, req.length // 512 - 1 do
      local s = sectors[first + i]
      if s then buf:write(i * 512, s) else buf:fill(0, i * 512, 512) end
    end
  end
  function h.write(req)
    local buf, first = req.buf, req.offset // 512
    for i = 0, req.length // 512 - 1 do sectors[first + i] = buf:read(i * 512, 512) end
  end
  return h, sectors
end

local threads = kernel.threads

local function dd_read(path, offset, bs)
  return ("dd if=%s bs=%d count=1 skip=%d iflag=direct,skip_bytes 2>&1 >/dev/null"):format(path, bs or 4096, offset)
end

-- One read served while dispatching, so that the node is there and a partition scan is done: what
-- the disk reads next is the spec's own.
local function serve_one_read(dev)
  ok_serving(dev, "dd if=" .. dev.path .. " of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null")
end

-- Wait (without dispatching) until the disk counts a read in flight, and a write with `write`.
local function wait_in_flight(dev, write)
  local inflight, t = "/sys/block/" .. dev.path:match("[^/]+$") .. "/inflight", core.monotonic()
  local function there()
    local r, w = run.slurp(inflight):match("^%s*(%d+)%s+(%d+)")
    return r ~= "0" and (not write or w ~= "0")
  end
  repeat core.sleep(0.02) until there() or core.monotonic() - t > 30
  assert.is_true(there(), "the read" .. (write and " and the write are" or " is") .. " in flight")
end

describe("Lua handlers on the real driver", function()
  local fds, nthreads
  setup(function()
    assert(ublk.features())
    collectgarbage()
    fds = kernel.fd_count()
    nthreads = threads()
  end)
  after_each(function()
    collectgarbage()
    for _, name in ipairs(kernel.ublk_devices()) do ublk.delete(tonumber(name:match("%d+"))) end
  end)

  describe("a device written in Lua", function()
    for _, threaded in ipairs { false, true } do
      it(("passes fio verification over both queues, 512 B to 512 KiB, depth 1 to 64, hand-offs batched (%s)")
        :format(threaded and "queue_threads = true: a thread per queue" or "the Lua thread serves the queue rings"), function()
        local before = threads()
        local h = sector_store()
        local dev <close> = assert(ublk.new { size = "32M", queues = 2, depth = 64, handler = h, queue_threads = threaded })
        assert(dev:start())
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
        short = function(req) return "too short" end,
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
      local dev <close> = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if behave[mode] then return behave[mode](req) end
          req.buf:fill(0)
        end,
      }, log = function(line) log[#log + 1] = line end })
      assert(dev:start())
      local function read_as(m, offset)
        mode = m
        local code, out = serving(dev, dd_read(dev.path, offset or 0) .. " && dd if=" .. dev.path
          .. (" bs=4096 count=1 skip=%d iflag=direct,skip_bytes 2>/dev/null | od -An -c | head -2"):format(offset or 0))
        mode = nil
        return code, out
      end
      local code, out = read_as("string")
      assert.are.equal(0, code, out)
      assert.matches("\n%s+S%s+S%s+S", out)
      code, out = read_as("enospc")
      assert.are_not.equal(0, code)
      assert.matches("No space left on device", out)
      code, out = read_as("enodata")
      assert.are_not.equal(0, code)
      assert.matches("No data available", out)
      code, out = read_as("enodata_name")
      assert.are_not.equal(0, code)
      assert.matches("No data available", out)
      code, out = read_as("raise", 8192)
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
      assert.are.equal(1, #log)
      assert.matches("^read handler failed at offset 8192, length 4096: answered EIO\n", log[1])
      assert.matches("handler_spec.lua:%d+: boom\nstack traceback:\n", log[1])
      code, out = read_as("table")
      assert.are_not.equal(0, code)
      assert.are.equal("read handler at offset 0, length 4096 returned a table: answered EIO", log[2])
      code, out = read_as("short")
      assert.are_not.equal(0, code)
      assert.are.equal("read handler at offset 0, length 4096 returned a string of 9 bytes for a read of 4096: answered EIO", log[3])
      code, out = read_as("bytes", 4096)
      assert.are.equal(0, code, out)
      assert.matches("\n%s+B%s+B%s+B", out)
      assert.are.same({ 4096, 4608, 5120, 5632, 6144, 6656, 7168, 7680 }, { table.unpack(seen, 1, 8) })
      code, out = read_as("late_raise", 12288)
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
      assert.matches("^read handler failed at offset 12288, length 4096: answered EIO\n", log[4])
      assert.matches("handler_spec.lua:%d+: late boom\nstack traceback:\n", log[4])
      code, out = read_as("late_enospc")
      assert.are_not.equal(0, code)
      assert.matches("No space left on device", out)
      code, out = read_as("late_fraction")
      assert.are_not.equal(0, code)
      assert.are.equal("read handler at offset 0, length 4096 returned 2.5, not a whole number of bytes: answered EIO", log[5])
      -- and after all that the device serves as before
      code, out = read_as(nil)
      assert.are.equal(0, code, out)
      assert.matches("\n%s+\\0%s+\\0", out)
      local st = dev:stats()
      assert.is_true(st.lua.errors >= 8)
      assert.are.equal(5, st.lua.failures) -- raised (twice), a table, a short string, a fraction; errnos are answers
    end)

    it("logs a failing handler once with its traceback, counts the repeats, and keeps serving", function()
      local log = {}
      local dev <close> = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          -- one message for every failing read (the first MiB, which the partition scan reads, serves)
          if req.offset >= 2^20 and req.offset < 2^21 then error("bad sector 0") end
          req.buf:fill(7)
        end,
      }, log = function(line) log[#log + 1] = line end })
      assert(dev:start())
      local code, out = serving(dev, "for i in $(seq 256 285); do dd if=" .. dev.path
        .. " bs=4096 count=1 skip=$i iflag=direct >/dev/null 2>&1 && exit 1; done; "
        .. "dd if=" .. dev.path .. " bs=4096 count=1 skip=1024 iflag=direct 2>/dev/null | od -An -tu1 | head -1")
      assert.are.equal(0, code, out)
      assert.matches("^%s+7%s+7%s+7", out)
      assert.are.equal(1, #log, table.concat(log, "\n---\n"))
      assert.matches("bad sector 0\nstack traceback:", log[1])
      assert.are.equal(30, dev:stats().lua.failures)
      assert.are.equal(30, dev:stats().lua.errors)
    end)

    it("tells the kernel which ops the handler table lacks", function()
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
      local dev <close> = assert(ublk.new { size = "8M", handler = {
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
      } })
      assert(dev:start())
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
    end)
  end)

  describe("handlers that wait", function()
    it("sleep while the device's other requests go on", function()
      local inflight, most, served = 0, 0, 0
      local dev <close> = assert(ublk.new { size = "8M", queues = 2, depth = 32, handler = {
        read = function(req)
          inflight = inflight + 1
          most = math.max(most, inflight)
          ublk.sleep(0.2)
          inflight = inflight - 1
          served = served + 1
          req.buf:fill(0)
        end,
      } })
      assert(dev:start())
      ok_serving(dev, "fio --name=sleepy --filename=" .. dev.path .. " --direct=1 --ioengine=io_uring --rw=randread"
        .. " --bs=4k --iodepth=16 --io_size=256k --size=8m --output-format=terse >/dev/null")
      assert.is_true(served >= 64, "served " .. served)
      assert.is_true(most >= 8, ("at most %d requests were asleep at once"):format(most))
      assert.are.equal(0, inflight)
    end)

    it("wait for a descriptor to become readable, or for their timeout", function()
      local pipe = uv.pipe()
      local waiting, woke = 0, {}
      local dev <close> = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if req.offset < 2^20 then return req.buf:fill(0) end -- the partition scan
          waiting = waiting + 1
          local ready = ublk.readable(pipe.read, req.offset == 2^20 and 30 or 0.2)
          waiting = waiting - 1
          woke[#woke + 1] = ready
          if not ready then return nil, "ETIMEDOUT" end
          req.buf:fill(string.byte(uv.fs_read(pipe.read, 1)))
        end,
      } })
      assert(dev:start())
      local j = job.start("dd if=" .. dev.path .. " bs=4096 count=1 skip=256 iflag=direct 2>/dev/null | head -c 4")
      local deadline = ublk.now() + 30
      repeat dev:dispatch(0.02) until waiting > 0 or ublk.now() > deadline
      assert.are.equal(1, waiting)
      for _ = 1, 10 do dev:dispatch(0.02) end
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
      uv.fs_close(pipe.read)
      uv.fs_close(pipe.write)
    end)

    it("keep a request and answer it later with req:done()", function()
      local h = sector_store()
      local later = {}
      local dev <close> = assert(ublk.new { size = "8M", handler = {
        read = h.read,
        write = function(req)
          later[#later + 1] = req:defer()
          return 1234 -- ignored: a deferred request is answered by req:done alone
        end,
      } })
      assert(dev:start())
      local answered = 0
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

    it("yield plainly and run again on the next dispatch", function()
      local turns = 0
      local dev <close> = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then -- not the partition scan's
            for _ = 1, 3 do turns = turns + 1; coroutine.yield() end
          end
          req.buf:fill(1)
        end,
      } })
      assert(dev:start())
      ok_serving(dev, dd_read(dev.path, 2^20))
      assert.are.equal(3, turns)
    end)
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
              core.sleep(2) -- blocking: the third read arrives meanwhile
              dev:dispatch(0) -- runs the rest of this batch (the second read), not the third
            end
          end,
        } })
        assert(dev:start())
        local t = core.monotonic()
        while core.monotonic() - t < 1 do dev:dispatch(0.05) end
        -- an 8 KiB read: two 4 KiB requests that wait together until the dispatch below takes both;
        -- a third read once the first one's handler blocks
        local j1 = job.start(dd_read(dev.path, 4 * M, 8192))
        local j2 = job.start(("while [ ! -e %s ]; do sleep 0.05; done; %s"):format(blocking, dd_read(dev.path, 6 * M)))
        t = core.monotonic()
        repeat until core.poll(0.05, dev:fd(), 1) ~= 0 or core.monotonic() - t > 30 -- the first is there
        core.sleep(0.5) -- and the second, split from the same read
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

    it("get EIO for what they hold when ublk.delete(id) deletes their device from the same thread, which does not wait for ever", function()
      local held
      local dev = assert(ublk.new { size = "8M", handler = { read = function(req)
        if req.offset == 2^22 then held = req:defer() end -- never answered by the handler
      end } })
      assert(dev:start())
      local j = job.start(dd_read(dev.path, 2^22))
      local t = core.monotonic()
      repeat dev:dispatch(0.05) until held or core.monotonic() - t > 30
      assert.is_not_nil(held, "the read reached the handler")
      t = core.monotonic()
      assert(ublk.delete(dev.id)) -- a plain DEL_DEV would wait for ever for the held read
      assert.is_true(core.monotonic() - t < 20, "the delete did not hang")
      assert.is_true(held:answered())
      assert.are.equal("ublk.device (deleted)", tostring(dev))
      local code, out = j:wait(30)
      j:cleanup()
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
    end)

    it("are served while a raw STOP_DEV from require(\"ublk.control\") waits for their requests", function()
      local control = require("ublk.control")
      local served = 0
      local dev = assert(ublk.new { size = "8M", handler = { read = function(req)
        if req.offset == 2^20 then served = served + 1 end
        req.buf:fill(7)
      end } })
      assert(dev:start())
      serve_one_read(dev)
      local j = job.start(("dd if=%s bs=4096 count=1 skip=256 iflag=direct 2>/dev/null | od -An -tu1 | head -1")
        :format(dev.path))
      wait_in_flight(dev) -- not dispatching: only the STOP_DEV below can let this thread answer it
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

    it("may delete their own device: what is still held is answered EIO", function()
      local dev, deleted
      dev = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then deleted = dev:delete() end
          req.buf:fill(0)
        end,
      }, log = function() end })
      assert(dev:start())
      local j = job.start(dd_read(dev.path, 2^20))
      local t0 = ublk.now()
      local code, out = j:wait(60, function() if tostring(dev) ~= "ublk.device (deleted)" then dev:dispatch(0.02) else ublk.sleep(0.02) end end)
      j:cleanup()
      assert.is_true(deleted)
      assert.are.equal("ublk.device (deleted)", tostring(dev))
      assert.are_not.equal(0, code)
      assert.matches("Input/output error", out)
      assert.is_true(ublk.now() - t0 < 20)
      assert.are.same({}, kernel.ublk_devices())
    end)
  end)

  it("serves inside a luv loop through dev:fd() and dev:dispatch()", function()
    local h = sector_store()
    local slept = 0
    local read = h.read
    h.read = function(req)
      if req.offset % 65536 == 0 then ublk.sleep(0.01); slept = slept + 1 end -- the timer works in luv too
      return read(req)
    end
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
    j:cleanup()
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
        local dev <close> = assert(ublk.new { target = "file", path = img, queue_threads = threaded, hooks = {
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
        } })
        assert(dev:start())
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

      it(("pass everything they return nothing for: fio verifies through a pass-through write hook (%s)"):format(mode), function()
        local hooked = 0
        local before = threads()
        local dev <close> = assert(ublk.new { target = "file", path = img, queues = 2, queue_threads = threaded,
          hooks = { write = function() hooked = hooked + 1 end } })
        assert(dev:start())
        assert.are.equal(before + (threaded and assert(dev:info()).queues or 0), (threads()))
        local function served()
          local sum = 0
          for _, q in ipairs(dev:stats().queues) do sum = sum + q.requests end
          return sum
        end
        local served_before = served() -- the partition scan's reads
        disk.fio_ok(ok_serving(dev, fio_command(dev.path, { rw = "randwrite", bs = "4k-128k", depth = 32, jobs = 2, size = "4m" })))
        local st = dev:stats()
        assert.is_true(hooked > 0)
        assert.are.equal(hooked, st.lua.passed)
        assert.are.equal(hooked, st.lua.requests) -- reads never went to Lua
        assert.are.equal(0, st.lua.errors)
        -- fio read back all it wrote (verified), through the C target alone: besides the writes, at
        -- least one read per 512 KiB (the largest request) of the 2 x 4 MiB
        assert.is_true(served() - served_before >= hooked + 16, ("%d requests for %d writes"):format(served() - served_before, hooked))
      end)
    end

    for _, threaded in ipairs { false, true } do
      it(("leave the ops they do not name to %s"):format(threaded and "the queue threads (queue_threads = true)"
          or "the Lua thread's dispatch"), function()
        local dev <close> = assert(ublk.new { target = "file", path = img, queue_threads = threaded,
          hooks = { write = function() end } })
        assert(dev:start())
        serve_one_read(dev)
        local served = dev:stats().queues[1].requests
        -- a read (never hooked) while this thread does not dispatch
        local j = job.start(("dd if=%s of=/dev/null bs=4k count=1 skip=10 iflag=direct"):format(dev.path))
        if threaded then
          assert.are.equal(0, (j:wait(30, function() core.sleep(0.02) end)), "a queue thread served the read")
          assert.is_true(dev:stats().queues[1].requests > served)
        else
          wait_in_flight(dev)
          assert.are.equal(1, core.poll(5, dev:fd(), 1) & 1, "the read is in the ring")
          core.sleep(0.5)
          assert.is_nil(j:status(), "the read waits for a dispatch")
          assert.are.equal(served, dev:stats().queues[1].requests)
          assert.are.equal(0, (j:wait(30, function() dev:dispatch(0.02) end)))
          assert.is_true(dev:stats().queues[1].requests > served)
        end
        j:cleanup()
        assert.are.equal(0, dev:stats().lua.requests)
      end)
    end

    it("are absent from a device without them: its requests never reach Lua", function()
      local dev <close> = assert(ublk.new { target = "file", path = img })
      assert(dev:start())
      sh("dd if=" .. dev.path .. " of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null")
      assert.is_nil(dev:stats().lua)
      assert.has_error(function() dev:dispatch() end, "dev:dispatch: this device has no handler or hooks, or is not started")
    end)
  end)

  describe("stopping", function()
    it("answers EIO for requests a handler still holds after the grace period, and leaves nothing", function()
      local log, held = {}, 0
      local dev = assert(ublk.new { size = "8M", handler = {
        read = function(req)
          if req.offset == 2^20 then held = held + 1; ublk.sleep(600) end -- not the partition scan's
          req.buf:fill(0)
        end,
      }, log = function(line) log[#log + 1] = line end })
      assert(dev:start())
      local j = job.start(dd_read(dev.path, 2^20))
      local deadline = ublk.now() + 30
      repeat dev:dispatch(0.02) until held > 0 or ublk.now() > deadline
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
        serve_one_read(dev)
        j = job.start(("dd if=%s of=%s.read bs=4k count=1 skip=10 iflag=direct"):format(dev.path, img))
        w = job.start(("dd if=/dev/zero of=%s bs=4k count=1 seek=20 oflag=direct 2>&1"):format(dev.path))
        wait_in_flight(dev, true) -- nobody dispatches for them
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

  it("leaves no fd, thread or device behind", function()
    kernel.assert_nothing_left(fds, nthreads)
  end)
end)
