-- The data plane on the real ublk driver: the null, ram and file targets under fio with
-- verification, ext4, the file target's own promises, stopping under load, eight devices at once,
-- and `ublk add`/`list`/`del`.
local kernel = require("support.kernel")
local run = require("support.run")
local disk = require("support.disk")
kernel.require_driver()
local ublk = require("ublk")

local TMP = run.TMP

local sh = disk.sh

local threads = kernel.threads

local function no_devices_left()
  assert.are.same({}, kernel.ublk_devices())
  assert.are.equal("", sh("ls /dev | grep '^ublkb' || true"))
end

local fio_verify = disk.fio_verify

local function queue_requests(dev)
  local counts = {}
  for q, s in ipairs(dev:stats().queues) do counts[q] = s.requests end
  return counts
end

describe("serving I/O on the real driver", function()
  local fds, nthreads
  setup(function()
    assert(ublk.features()) -- the shared control handle (2 fds) stays open: count from here
    collectgarbage()
    fds, nthreads = kernel.fd_count(), threads()
  end)
  after_each(function()
    collectgarbage()
    for _, name in ipairs(kernel.ublk_devices()) do ublk.delete(tonumber(name:match("%d+"))) end
  end)

  describe("fio with verification", function()
    for _, target in ipairs { "ram", "file" } do
      it(target .. ": random and sequential, 512 B to 1 MiB, depth 1 to 128, two jobs over two queues", function()
        local opts = { target = target, size = "64M", queues = 2, depth = 128, max_io = "1M" }
        if target == "file" then opts.path = TMP .. "/fio-backing.img"; os.remove(opts.path) end
        local dev <close> = assert(ublk.new(opts))
        assert(dev:start())
        fio_verify(dev.path, { rw = "randwrite", bs = "512-1m", depth = 128, jobs = 2 })
        fio_verify(dev.path, { rw = "write", bs = "1m", depth = 1, jobs = 2 })
        fio_verify(dev.path, { rw = "randwrite", bs = "512", depth = 1, jobs = 2, size = "1m" })
        fio_verify(dev.path, { rw = "randwrite", bs = "4k", depth = 32, jobs = 2, size = "8m" })
        local counts = queue_requests(dev)
        assert.is_true(counts[1] > 0 and counts[2] > 0, "both queues served requests: " .. table.concat(counts, ","))
        for _, s in ipairs(dev:stats().queues) do
          assert.are.equal(0, s.errors)
          assert.are.equal(0, s.cmd_error)
          assert.is_true(s.wakeups < s.requests + s.submits, "commits are batched per wake-up")
        end
        if opts.path then os.remove(opts.path) end
      end)
    end

    it("null: every op succeeds, reads give zeros even after writes", function()
      local dev <close> = assert(ublk.new { target = "null", size = "256M", queues = 2, depth = 128, max_io = "1M" })
      assert(dev:start())
      sh("fio --name=null --filename=" .. dev.path .. " --direct=1 --ioengine=io_uring --rw=randrw --bsrange=512-1m"
        .. " --iodepth=128 --numjobs=2 --size=32m --offset_increment=32m --group_reporting")
      sh(("dd if=/dev/urandom of=%s bs=64k count=16 oflag=direct 2>/dev/null"):format(dev.path))
      sh(("cmp -n 1048576 %s /dev/zero"):format(dev.path))
      sh(("blkdiscard -o 0 -l 1048576 %s && blkdiscard -z -o 0 -l 1048576 %s && sync"):format(dev.path, dev.path))
      for _, s in ipairs(dev:stats().queues) do assert.are.equal(0, s.errors) end
    end)
  end)

  it("ram: a disk larger than the machine's memory, allocated as written, freed by discard", function()
    local dev <close> = assert(ublk.new { target = "ram", size = "64G" }) -- the VM has 4 GiB
    assert(dev:start())
    sh(("dd if=/dev/urandom of=%s/pat bs=64k count=16 2>/dev/null"):format(TMP))
    sh(("dd if=%s/pat of=%s bs=64k seek=%d oflag=direct 2>/dev/null"):format(TMP, dev.path, 40 * 2^30 // 65536))
    assert.are.equal(2^20, dev:stats().memory)
    sh(("cmp %s/pat %s -i 0:%d -n 1048576"):format(TMP, dev.path, 40 * 2^30))
    sh(("cmp -n 1048576 %s /dev/zero"):format(dev.path)) -- never written: zeros, and no memory taken
    assert.are.equal(2^20, dev:stats().memory)
    sh(("blkdiscard -o %d -l 1048576 %s"):format(40 * 2^30, dev.path))
    assert.are.equal(0, dev:stats().memory)
    sh(("cmp -n 1048576 %s /dev/zero -i %d:0"):format(dev.path, 40 * 2^30))
  end)

  it("names what stopped it when /dev/ublkcN stays busy", function()
    local dev <close> = assert(ublk.new { target = "null", size = "1M" })
    local holder = assert(io.open(dev.char_path, "rb")) -- the driver takes one opener at a time
    local ok, msg, errno = dev:start()
    holder:close()
    assert.is_nil(ok)
    assert.are.equal(ublk.core.errno.EBUSY, errno)
    assert.matches("device %d+ %(null target%): opening the char device: Device or resource busy", msg)
    assert(dev:start()) -- and once it is free, the same device starts
  end)

  describe("ext4", function()
    for _, target in ipairs { "ram", "file" } do
      it(target .. ": mkfs, mount, write, umount, e2fsck clean, mount again, same contents", function()
        local opts = { target = target, size = "128M", queues = 2 }
        if target == "file" then opts.path = TMP .. "/ext4-backing.img"; os.remove(opts.path) end
        local dev <close> = assert(ublk.new(opts))
        assert(dev:start())
        disk.ext4_round_trip(dev.path, TMP .. "/mnt-" .. target)
        if opts.path then os.remove(opts.path) end
      end)
    end
  end)

  describe("the file target", function()
    local img = TMP .. "/file-target.img"
    before_each(function() os.remove(img) end)

    it("puts what was written through the device byte for byte in the backing file", function()
      local dev <close> = assert(ublk.new { target = "file", path = img, size = "32M" })
      assert.are.equal(32 * 2^20, dev:params().size)
      assert(dev:start())
      sh(("dd if=/dev/urandom of=%s/src bs=1M count=4 2>/dev/null"):format(TMP))
      sh(("dd if=%s/src of=%s bs=1M seek=3 oflag=direct 2>/dev/null"):format(TMP, dev.path))
      sh(("cmp %s/src %s -i 0:%d -n %d"):format(TMP, img, 3 * 2^20, 4 * 2^20))
      -- and the other way: the backing file's bytes are what the device reads
      sh(("dd if=%s of=%s/back bs=1M skip=3 count=4 iflag=direct 2>/dev/null && cmp %s/src %s/back"):format(dev.path, TMP, TMP, TMP))
    end)

    it("takes its size from the backing file, and refuses a size beyond it", function()
      sh(("truncate -s 24M %s"):format(img))
      local dev <close> = assert(ublk.new { target = "file", path = img })
      assert.are.equal(24 * 2^20, dev:params().size)
      assert.has_error(function() ublk.new { target = "file", path = img, size = "25M" } end,
        ("ublk.new: size = 25M: must be at most %d bytes, what %s holds past offset 0"):format(24 * 2^20, img))
    end)

    it("frees the backing file's blocks on discard", function()
      local dev <close> = assert(ublk.new { target = "file", path = img, size = "32M" })
      assert(dev:start())
      sh(("dd if=/dev/urandom of=%s bs=1M count=16 oflag=direct 2>/dev/null"):format(dev.path))
      local before = tonumber(sh("stat -c %b " .. img))
      sh(("blkdiscard -o 0 -l %d %s"):format(8 * 2^20, dev.path))
      local after = tonumber(sh("stat -c %b " .. img))
      assert.is_true(before - after >= 8 * 2^20 // 512 - 64, ("blocks %d -> %d"):format(before, after))
      -- write-zeroes leaves zeros
      sh(("blkdiscard -z -o %d -l %d %s"):format(8 * 2^20, 2^20, dev.path))
      sh(("cmp -n %d %s /dev/zero -i %d:0"):format(2^20, img, 8 * 2^20))
    end)

    it("serves a read-only device that refuses writes", function()
      sh(("dd if=/dev/urandom of=%s bs=1M count=4 2>/dev/null"):format(img))
      local dev <close> = assert(ublk.new { target = "file", path = img, read_only = true })
      assert.is_true(dev:params().read_only)
      assert(dev:start())
      sh(("cmp %s %s"):format(img, dev.path))
      local code, _, err = run.plain(("dd if=/dev/zero of=%s bs=4k count=1 oflag=direct"):format(dev.path))
      assert.are_not.equal(0, code)
      assert.matches("Operation not permitted", err)
    end)

    it("is told not to send DISCARD when the params say so: the block layer refuses it", function()
      local dev <close> = assert(ublk.new { target = "ram", size = "16M", discard = false })
      assert(dev:start())
      local code, _, err = run.plain("blkdiscard " .. dev.path)
      assert.are_not.equal(0, code)
      assert.matches("not supported", err)
    end)
  end)

  describe("stopping", function()
    it("stops and deletes while fio is running: no hang, fio sees errors, nothing left", function()
      local dev = assert(ublk.new { target = "ram", size = "64M", queues = 2 })
      assert(dev:start())
      local status = TMP .. "/fio-status"
      os.remove(status)
      sh(("(fio --name=load --filename=%s --direct=1 --ioengine=io_uring --rw=randrw --bs=4k --iodepth=32"
        .. " --numjobs=2 --time_based --runtime=60 >%s/fio-out 2>&1; echo $? >%s) >/dev/null 2>&1 &"):format(dev.path, TMP, status))
      local t0 = ublk.core.monotonic()
      repeat ublk.core.sleep(0.1) until (dev:stats().queues[1].requests > 200) or ublk.core.monotonic() - t0 > 20
      assert.is_true(dev:stats().queues[1].requests > 200, "fio got going")
      local t1 = ublk.core.monotonic()
      assert(dev:delete())
      assert.is_true(ublk.core.monotonic() - t1 < 20, "delete did not hang")
      local code
      repeat
        code = tonumber(run.slurp(status) or "")
        if not code then ublk.core.sleep(0.1) end
      until code or ublk.core.monotonic() - t1 > 30
      assert.is_not_nil(code, "fio ended")
      assert.are_not.equal(0, code)
      no_devices_left()
    end)

    it("a served device left to the collector is stopped and deleted, its threads joined", function()
      local before = threads()
      do
        local dev = assert(ublk.new { target = "ram", size = "16M", queues = 2 })
        assert(dev:start())
        assert.are.equal(before + 2, (threads()))
        sh(("dd if=/dev/zero of=%s bs=64k count=16 oflag=direct 2>/dev/null"):format(dev.path))
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(before, (threads()))
      no_devices_left()
    end)

    it("dev:stop() leaves the device, stopped, for delete", function()
      local dev <close> = assert(ublk.new { target = "null", size = "16M" })
      assert(dev:start())
      assert.are.equal("live", dev:info().state)
      assert(dev:stop())
      assert.are.equal("dead", dev:info().state)
      assert.is_nil(dev:stats())
      assert(dev:delete())
      no_devices_left()
    end)

    it("starts a stopped device again where the kernel serves it again (7.3), and says why not where not (6.12)", function()
      local dev <close> = assert(ublk.new { target = "null", size = "16M" })
      assert(dev:start())
      assert(dev:stop())
      local ok, msg, errno = dev:start()
      if kernel.series == "6.12" then assert.is_nil(ok) end
      if kernel.series == "7.3" then assert.is_true(ok, msg) end
      if ok then
        assert.are.equal("live", dev:info().state)
        sh("dd if=" .. dev.path .. " of=/dev/null bs=4k count=16 iflag=direct 2>&1")
      else
        assert.are.equal("integer", math.type(errno))
        assert.matches("it was stopped before: a kernel may refuse to serve a stopped device again, as 6.12 does; create a new one", msg)
        assert.is_nil(dev:stats())
      end
      assert(dev:delete())
      no_devices_left()
      -- a device with Lua in its path is never served again: its Lua side ended with the stop
      local lua_dev <close> = assert(ublk.new { size = "8M", handler = { read = function() end } })
      assert(lua_dev:start())
      assert(lua_dev:stop())
      assert.has_error(function() lua_dev:start() end, ("dev:start: device %d was stopped, and a device with a handler or "
        .. "hooks is not served again (its Lua side ended with the stop): create a new one"):format(lua_dev.id))
      assert(lua_dev:delete())
      no_devices_left()
    end)
  end)

  it("serves eight devices at once from one process", function()
    local devs = {}
    for i = 1, 8 do
      devs[i] = assert(ublk.new { target = "ram", size = "8M", depth = 16 })
      assert(devs[i]:start())
    end
    for i, dev in ipairs(devs) do
      sh(("dd if=/dev/urandom of=%s/pat%d bs=64k count=4 2>/dev/null && dd if=%s/pat%d of=%s bs=64k oflag=direct 2>/dev/null"):format(
        TMP, i, TMP, i, dev.path))
    end
    for i, dev in ipairs(devs) do
      sh(("cmp -n 262144 %s/pat%d %s"):format(TMP, i, dev.path))
    end
    assert.are.equal(8, #kernel.ublk_devices())
    for _, dev in ipairs(devs) do assert(dev:delete()) end
    no_devices_left()
  end)

  describe("misuse", function()
    it("explains a device with no target", function()
      local dev <close> = assert(ublk.new { size = "16M" })
      assert.has_error(function() dev:start() end,
        "dev:start: this device has no target: create it with target = 'null', 'ram' or 'file'")
    end)
    it("names the field of a bad target option", function()
      assert.has_error(function() ublk.new { target = "tape", size = "1M" } end,
        "ublk.new: target = tape: must be one of null, ram, file")
      assert.has_error(function() ublk.new { target = "ram", size = "1M", path = "/x" } end,
        "ublk.new: path = /x: only the file target takes it (target = 'ram')")
      assert.has_error(function() ublk.new { size = "1M", direct = true } end,
        "ublk.new: direct = true: needs target = 'file'")
    end)
    it("returns nil, message, errno for a backing file that is missing", function()
      local dev, msg, errno = ublk.new { target = "file", path = TMP .. "/no-such.img" }
      assert.is_nil(dev)
      assert.are.equal(ublk.core.errno.ENOENT, errno)
      assert.matches("No such file or directory %(give size to create it%)", msg)
    end)
  end)

  describe("the CLI", function()
    it("ublk add returns once the device is live; list shows target and pid; del stops the server", function()
      local img = TMP .. "/cli.img"
      os.remove(img)
      local code, out, err = run.ublk("--trace add -t file -f " .. img .. " --size 32M -q 2")
      assert.are.equal(0, code, err)
      -- the background server's trace of bringing the device up comes to our stderr, not its log
      assert.matches("ublk: %-> ADD_DEV", err)
      assert.matches("ublk: <%- START_DEV = 0", err)
      assert.is_nil(out:find("ublk: ", 1, true), out)
      local id, path, pid = out:match("ublk device (%d+): (/dev/ublkb%d+) %(target file, server pid (%d+)%)")
      assert.is_not_nil(id, out)
      sh(("dd if=/dev/urandom of=%s/cli-src bs=1M count=2 2>/dev/null && dd if=%s/cli-src of=%s bs=1M oflag=direct 2>/dev/null"):format(TMP, TMP, path))
      sh(("cmp -n 2097152 %s/cli-src %s"):format(TMP, img))
      code, out = run.ublk("list")
      assert.are.equal(0, code)
      assert.matches(("\n%-4d live.-%s%s+file"):format(tonumber(id), pid, " "), out)
      assert.matches("%(" .. img:gsub("%p", "%%%0") .. "%)", out)
      code, out, err = run.ublk("del " .. id)
      assert.are.equal(0, code, err)
      assert.matches("deleted ublk device " .. id, out)
      local stat = run.slurp("/proc/" .. pid .. "/stat")
      local st = stat and stat:match("^%d+ %b() (%a)")
      assert.is_true(st == nil or st == "Z", "the server exited (state " .. tostring(st) .. ")")
      no_devices_left()
      os.remove(img)
    end)

    it("ublk add fails with the server's own reason when the device cannot be made", function()
      local holder <close> = assert(ublk.new { size = "1M" })
      local code, out, err = run.ublk("add -t null --id " .. holder.id .. " --trace")
      assert.are.equal(1, code, out)
      assert.matches("ublk: <%- ADD_DEV = %-17 %(%-EEXIST%)", err)
      assert.matches("EEXIST", err)
      assert.are.equal(1, #kernel.ublk_devices())
    end)

    it("ublk add --foreground serves until SIGINT, then deletes the device", function()
      local code, out, err = run.run("timeout -s INT --preserve-status 4 " .. (os.getenv("UBLK_SPEC_CPATH")
        and ("env LUA_CPATH='%s;;' "):format(os.getenv("UBLK_SPEC_CPATH")) or "") .. "lua5.4 bin/ublk add -t null --foreground")
      assert.are.equal(0, code, err)
      assert.matches("ublk device %d+: /dev/ublkb%d+ %(target null, server pid %d+%)", out)
      assert.matches("stopped %(signal SIGINT%) and deleted", out)
      no_devices_left()
    end)
  end)

  describe("a signal while a device is made or deleted", function()
    -- A script that signals itself when the control trace shows `at` (a command sent or answered),
    -- so that the signal lands inside ublk.new, dev:start() or dev:delete(); `catch` makes it catch
    -- SIGTERM itself.
    local script = TMP .. "/signal-while-made.lua"
    setup(function()
      local f = assert(io.open(script, "w"))
      f:write([[
local ublk, core = require("ublk"), require("ublk.core")
local at, signame, catch = arg[1], arg[2], arg[3] == "catch"
local catcher = catch and assert(core.catch_signals { core.SIGTERM })
ublk.trace(true, { flush = function() end, write = function(_, ...)
  if table.concat({ ... }):find(at, 1, true) then core.kill(core.getpid(), core[signame]) end
end })
local dev = assert(ublk.new { target = "null", size = "16M" })
print("made " .. dev.id)
assert(dev:start())
print("started, state " .. dev:info().state)
if catcher then
  local ready = core.poll(1, catcher:fd(), 1)
  print("caught: " .. tostring(ready ~= 0))
end
assert(dev:delete())
print("deleted")
]])
      f:close()
    end)
    teardown(function() os.remove(script) end)

    local function made_with(at, signame, catch)
      local before = #kernel.ublk_devices()
      -- the default action for the three: a harness that runs us in the background may ignore SIGINT
      local code, out, err = run.run(("%s env --default-signal=INT,TERM,HUP lua5.4 %s '%s' %s %s")
        :format(run.ours_env(), script, at, signame, catch or ""))
      return code, out, err, #kernel.ublk_devices() - before
    end

    for _, case in ipairs {
      { "<- ADD_DEV", "SIGTERM", 15, "inside ublk.new" },
      { "<- SET_PARAMS", "SIGHUP", 1, "inside ublk.new" },
      { "-> START_DEV", "SIGTERM", 15, "inside dev:start()" },
      { "-> STOP_DEV", "SIGHUP", 1, "inside dev:delete()" },
      { "-> DEL_DEV", "SIGTERM", 15, "inside dev:delete()" },
    } do
      local at, signame, signo, where = table.unpack(case)
      it(("%s at %s (%s) ends the process as the signal says, and leaves no device"):format(signame, at, where), function()
        local code, out, err, added = made_with(at, signame)
        assert.are.equal(128 + signo, code, out .. err)
        assert.are.equal(0, added, "devices left: " .. table.concat(kernel.ublk_devices(), " "))
        -- it ended inside the call, not after it
        if where == "inside ublk.new" then
          assert.are.equal("", out)
        elseif where == "inside dev:start()" then
          assert.matches("^made %d+\n$", out)
        else
          assert.matches("^made %d+\nstarted, state live\n$", out)
        end
      end)
    end

    it("SIGINT inside dev:start() is lua5.4's 'interrupted!' as the call returns, and leaves no device", function()
      -- lua5.4 catches SIGINT itself (an error at the next instruction); the held signal must reach
      -- it: a system() in between (as `os.execute("mkdir ...")` was) would have dropped it
      local code, out, err, added = made_with("<- START_DEV", "SIGINT")
      assert.are.equal(1, code, out .. err)
      assert.matches("interrupted!", err)
      assert.matches("in method 'start'", err)
      assert.matches("^made %d+\n$", out)
      assert.are.equal(0, added, "devices left: " .. table.concat(kernel.ublk_devices(), " "))
    end)

    it("a signal the program catches waits until the device is made, and the program sees it after", function()
      local code, out, err, added = made_with("<- ADD_DEV", "SIGTERM", "catch")
      assert.are.equal(0, code, out .. err)
      assert.matches("made %d+\nstarted, state live\ncaught: true\ndeleted\n", out)
      assert.are.equal(0, added)
    end)
  end)

  it("leaves no fd, thread or device behind", function()
    kernel.assert_nothing_left(fds, nthreads)
    no_devices_left()
  end)
end)
