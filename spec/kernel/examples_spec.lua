-- The examples of Lua handlers and hooks, each run as its users run it (a process of its own, as root)
-- on the real driver, and stopped with Ctrl-C's SIGINT: the RAM disk and the copy-on-write disk pass
-- fio's verification and an ext4 round trip, the faulty disk fails and delays where it was told, the
-- tracing disk logs every request and prints its histogram.
local kernel = require("support.kernel")
local job = require("support.job")
local disk = require("support.disk")
local run = require("support.run")
kernel.require_driver()
local ublk = require("ublk")

local TMP = run.TMP
local sh = disk.sh

-- Start `lua5.4 examples/ARGS` with this checkout's module; returns the job, device id and path
-- once it says the device is usable.
local function start(args)
  local j = job.start("exec lua5.4 examples/" .. args, true)
  local id, path = j:expect("ublk device (%d+): (/dev/ublkb%d+)", 60)
  return j, tonumber(id), path
end

-- Ctrl-C for the example serving device `id` (its server pid, as the kernel knows it): its exit
-- status, stdout and stderr.
local function interrupt(j, id)
  local pid
  for _, info in ipairs(assert(ublk.list())) do
    if info.id == id then pid = info.pid end
  end
  assert(pid and pid > 0, "device " .. id .. " has a server")
  assert(ublk.core.kill(pid, ublk.core.SIGINT))
  local code, out, err = j:wait(60)
  j:cleanup()
  assert.are.same({}, kernel.ublk_devices())
  return code, out, err
end

local function md5(path) return sh("md5sum " .. path):match("^%x+") end

describe("examples", function()
  after_each(function()
    for _, name in ipairs(kernel.ublk_devices()) do ublk.delete(tonumber(name:match("%d+"))) end
  end)

  it("ramdisk.lua: fio verification over two queues, then ext4, then Ctrl-C deletes it", function()
    local j, id, path = start("ramdisk.lua 128M 2 64")
    local dev = assert(ublk.list())[1]
    assert.are.equal(2, dev.queues)
    disk.fio_verify(path, { rw = "randwrite", bs = "4k-512k", depth = 32, jobs = 2, size = "32m" })
    disk.ext4_round_trip(path, TMP .. "/mnt-ramdisk")
    local code, out, err = interrupt(j, id)
    assert.are.equal(0, code, err)
    assert.matches("stopped %(signal SIGINT%) and deleted; %d+ blocks were written\n$", out)
    assert.are.equal("", err)
  end)

  it("ramdisk.lua: a STOP_DEV from another process ends its run() (the kernel aborts the rings it serves)", function()
    local j, id, path = start("ramdisk.lua 16M 1 16")
    sh(("dd if=/dev/urandom of=%s bs=64k count=4 oflag=direct 2>/dev/null"):format(path))
    -- not `ublk del`, which asks the server to stop with SIGTERM: the kernel alone tells it here
    assert(require("ublk.control").command("STOP_DEV", { dev_id = id }))
    local code, out, err = j:wait(60)
    j:cleanup()
    assert.are.equal(0, code, err)
    assert.matches("stopped %(stopped%) and deleted; 64 blocks were written\n$", out)
    assert.are.same({}, kernel.ublk_devices())
  end)

  describe("cow.lua", function()
    local base = TMP .. "/cow-base.img"
    after_each(function() os.remove(base) end)

    it("reads the base until a block is written; fio verifies; the base never changes", function()
      sh("dd if=/dev/urandom of=" .. base .. " bs=1M count=64 2>/dev/null")
      local before = md5(base)
      local j, id, path = start("cow.lua " .. base)
      sh(("cmp -n %d %s %s"):format(64 * 2^20, base, path)) -- all of it, as the base has it
      sh(("dd if=/dev/zero of=%s bs=4k seek=10 count=1 oflag=direct 2>/dev/null"):format(path))
      sh(("cmp -n 4096 -i 40960:0 %s /dev/zero"):format(path)) -- the written block
      sh(("cmp -n 40960 %s %s"):format(base, path)) -- its neighbours, still the base's
      sh(("cmp -n 4096 -i 45056 %s %s"):format(base, path))
      disk.fio_verify(path, { rw = "randwrite", bs = "4k-256k", depth = 32, jobs = 2, size = "16m" })
      local code, out, err = interrupt(j, id)
      assert.are.equal(0, code, err)
      assert.matches(("stopped %%(signal SIGINT%%) and deleted; %%d+ blocks were written, %s is untouched\n$"):format(
        base:gsub("%p", "%%%0")), out)
      assert.are.equal(before, md5(base))
    end)

    it("takes ext4 over a base file system without writing to it", function()
      -- 4 KiB blocks: a file system of 1 KiB blocks cannot be mounted on a disk of 4 KiB sectors
      sh("truncate -s 128M " .. base .. " && mkfs.ext4 -q -F -b 4096 " .. base)
      local before = md5(base)
      local j, id, path = start("cow.lua " .. base)
      sh("e2fsck -fn " .. path) -- the base's file system, seen through the overlay
      disk.ext4_round_trip(path, TMP .. "/mnt-cow", true)
      local code, _, err = interrupt(j, id)
      assert.are.equal(0, code, err)
      assert.are.equal(before, md5(base))
      assert.are.equal("", sh("debugfs -R 'ls /' " .. base .. " 2>/dev/null | grep -o blob || true"))
    end)
  end)

  it("faulty.lua: fails the writes and delays the reads of its ranges, passes the rest to the file", function()
    local img = TMP .. "/faulty.img"
    sh("dd if=/dev/urandom of=" .. img .. " bs=1M count=64 2>/dev/null")
    local j, id, path = start("faulty.lua " .. img .. " fail_writes=16M+1M delay_reads=32M+1M delay=0.3")
    local code, _, err = run.plain(
      ("dd if=/dev/zero of=%s bs=4k count=1 seek=%d oflag=direct"):format(path, 16 * 256 + 1))
    assert.are_not.equal(0, code)
    assert.matches("Input/output error", err)
    sh(("cmp -s -n 4096 -i %d:0 %s /dev/zero && exit 1 || true"):format((16 * 256 + 1) * 4096, img)) -- not written
    sh(("dd if=/dev/zero of=%s bs=4k count=1 seek=%d oflag=direct 2>/dev/null"):format(path, 8 * 256))
    sh(("cmp -n 4096 -i %d:0 %s /dev/zero"):format(8 * 256 * 4096, img)) -- written, in the file
    local t0 = ublk.now()
    local slow = sh(("dd if=%s bs=4k count=1 skip=%d iflag=direct 2>/dev/null | md5sum"):format(path, 32 * 256 + 3))
    assert.is_true(ublk.now() - t0 >= 0.3, "the read in the slow range was delayed")
    assert.are.equal(sh(("dd if=%s bs=4k count=1 skip=%d 2>/dev/null | md5sum"):format(img, 32 * 256 + 3)), slow)
    sh(("cmp -n %d -i %d:%d %s %s"):format(2^20, 40 * 2^20, 40 * 2^20, img, path)) -- elsewhere: the file
    local out
    code, out, err = interrupt(j, id)
    assert.are.equal(0, code, err)
    assert.matches("stopped %(signal SIGINT%) and deleted; 1 writes failed, 1 reads delayed\n$", out)
    os.remove(img)
  end)

  it("trace.lua: logs every request with its latency and prints the histogram", function()
    local img, log = TMP .. "/trace.img", TMP .. "/trace.log"
    sh("dd if=/dev/urandom of=" .. img .. " bs=1M count=16 2>/dev/null")
    local j, id, path = start("trace.lua " .. img .. " " .. log)
    sh(("dd if=/dev/urandom of=%s/trace-src bs=8k count=1 2>/dev/null"):format(TMP))
    sh(("dd if=%s/trace-src of=%s bs=8k seek=128 oflag=direct 2>/dev/null"):format(TMP, path))
    sh(("cmp -n 8192 -i 0:%d %s/trace-src %s"):format(2^20, TMP, img)) -- through plain Lua file I/O
    sh(("dd if=%s of=/dev/null bs=4k skip=512 count=1 iflag=direct 2>/dev/null"):format(path))
    local code, out, err = interrupt(j, id)
    assert.are.equal(0, code, err)
    local text = assert(run.slurp(log))
    assert.matches("write offset +1048576 length +8192 latency +[%d.]+ us\n", text)
    assert.matches("read  offset +2097152 length +4096 latency +[%d.]+ us\n", text)
    local lines = select(2, text:gsub("\n", ""))
    local total = tonumber(out:match("; (%d+) requests, the slowest [%d.]+ us\n"))
    assert.are.equal(lines, total)
    local counted = 0
    for n in out:gmatch("<= %d+ us +(%d+) #*\n") do counted = counted + tonumber(n) end
    assert.are.equal(total, counted)
    os.remove(img)
    os.remove(log)
  end)
end)
