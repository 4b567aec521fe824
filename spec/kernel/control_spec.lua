-- The control plane on the real ublk driver: every command we send, and the errors the kernel gives.
local kernel = require("support.kernel")
local run = require("support.run")
kernel.require_driver()
local ublk = require("ublk")

local function no_devices_left()
  assert.are.same({}, kernel.ublk_devices())
end

describe("ublk control plane on the real driver", function()
  after_each(function()
    collectgarbage()
    for _, name in ipairs(kernel.ublk_devices()) do ublk.delete(tonumber(name:match("%d+"))) end
  end)

  it("reads the kernel's features", function()
    local f = assert(ublk.features())
    assert.is_true(f.ioctl_encode)
    assert.is_true(f.legacy_opcodes)
    assert.truthy(f.mask & (1 << 6) ~= 0)
    local names = table.concat(f.names, ",")
    assert.matches("cmd_ioctl_encode", names)
    assert.matches("user_copy", names)
    if kernel.series == "6.12" then assert.are.equal(0x1fe, f.mask) end
    if kernel.series == "7.3" then
      assert.are.equal(0x1fffff, f.mask)
      assert.matches("auto_buf_reg", names)
      assert.matches("batch_io", names)
    end
  end)

  it("says in the doctor that devices can be created", function()
    local r = ublk.doctor()
    for _, c in ipairs(r.checks) do assert.is_true(c.ok, c.name .. ": " .. c.detail) end
    assert.is_true(r.ok)
  end)

  local sets = {
    { size = 64 * 2^20, queues = 2, depth = 64, block_size = 4096, max_io = 512 * 1024 },
    { size = 2^20 },
    { size = 2^30, queues = 1, depth = 4096, block_size = 512, physical_block_size = 4096, io_min = 4096, io_opt = 2^20 },
    { size = 8 * 2^20, read_only = true, rotational = true, volatile_cache = true, fua = true },
    { size = 16 * 2^20, discard = true, discard_granularity = 4096, max_discard = 2^20, max_write_zeroes = 2^19 },
    { size = 32 * 2^20, chunk_size = 2^20, max_io = 2^20 },
    { size = 4 * 2^20, virt_boundary = 4096, max_io = 4096 },
    { size = 2^40, depth = 1, max_io = 32 * 2^20, block_size = 2048 },
  }
  for i, opts in ipairs(sets) do
    it("round-trips parameter set " .. i .. " through ADD_DEV, SET_PARAMS, GET_PARAMS, GET_DEV_INFO2", function()
      local dev = assert(ublk.new(opts))
      local p = assert(dev:params())
      local want = require("ublk.params").check(opts)
      for k, v in pairs(want) do
        if k ~= "flags" then assert.are.same(v, p[k], k) end
      end
      assert.are.equal(dev.id, p.id)
      local info = assert(dev:info())
      assert.are.equal("dead", info.state)
      assert.are.equal(dev.id, info.id)
      assert.are.equal(math.min(want.queues, require("ublk.core").const.ONLINE_CPUS), info.queues)
      assert.are.equal(want.depth, info.depth)
      assert.are.equal(want.max_io, info.max_io)
      assert.are.equal(0, info.owner_uid)
      assert.matches("cmd_ioctl_encode", table.concat(info.flags, ","))
      assert.is_true(dev:delete())
      assert.is_true(dev:delete()) -- idempotent
      no_devices_left()
    end)
  end

  it("creates a device with the id the caller chose, and a second one beside it", function()
    local a <close> = assert(ublk.new { size = 2^20, id = 37 })
    local b <close> = assert(ublk.new { size = 2^20 })
    assert.are.equal(37, a.id)
    assert.are.equal("/dev/ublkc37", a.char_path)
    assert.are.equal("/dev/ublkb37", a.path)
    assert.are_not.equal(37, b.id)
    local ids = {}
    for _, d in ipairs(assert(ublk.list())) do ids[#ids + 1] = d.id end
    table.sort(ids)
    assert.are.same({ math.min(a.id, b.id), math.max(a.id, b.id) }, ids)
  end)

  it("explains a taken id with the EEXIST message", function()
    local _taken <close> = assert(ublk.new { size = 2^20, id = 5 })
    local b, msg, errno = ublk.new { size = 2^20, id = 5 }
    assert.is_nil(b)
    assert.are.equal(17, errno)
    assert.are.equal("ADD_DEV (device 5) failed: File exists (-EEXIST, errno 17): device id 5 is already taken (or still "
      .. "being deleted): choose another id, or leave id = nil to let the kernel pick one", msg)
  end)

  it("explains a missing device with the ENODEV message", function()
    local ok, msg, errno = ublk.delete(4242)
    assert.is_nil(ok)
    assert.are.equal(19, errno)
    assert.are.equal("DEL_DEV_ASYNC (device 4242) failed: No such device (-ENODEV, errno 19): there is no ublk device 4242 "
      .. "(ublk list shows the ones that exist)", msg)
  end)

  it("deletes on <close>, on __gc, and never uses a deleted device", function()
    do
      local _d <close> = assert(ublk.new { size = 2^20 })
      assert.are.equal(1, #kernel.ublk_devices())
    end
    no_devices_left()
    local d = assert(ublk.new { size = 2^20 })
    assert.are.equal(1, #kernel.ublk_devices(), tostring(d))
    d = nil -- luacheck: ignore 311 (the last reference goes, so the collector may take it)
    collectgarbage(); collectgarbage()
    no_devices_left()
    local e = assert(ublk.new { size = 2^20 })
    e:delete()
    assert.has_error(function() e:info() end, "attempt to use a deleted ublk device")
    assert.matches("deleted", tostring(e))
  end)

  it("leaves no device and no descriptor after 200 add/delete cycles", function()
    ublk.features() -- the shared control ring is open before counting
    local fds = kernel.fd_count()
    for i = 1, 200 do
      local d = assert(ublk.new { size = 2^20, queues = 1 + i % 2, depth = 1 + i % 64 })
      assert(d:delete())
    end
    collectgarbage()
    no_devices_left()
    assert.are.equal(fds, kernel.fd_count())
  end)

  it("tells each queue's CPUs", function()
    local d <close> = assert(ublk.new { size = 2^20, queues = 2 })
    local nq = d:info().queues
    local seen = {}
    for q = 0, nq - 1 do
      local cpus = assert(d:queue_affinity(q))
      assert.is_true(#cpus >= 1)
      for _, c in ipairs(cpus) do
        assert.is_true(c >= 0 and c < require("ublk.core").const.ONLINE_CPUS)
        seen[c] = true
      end
    end
    assert.is_not_nil(next(seen), "no CPU for any queue")
    assert.has_error(function() d:queue_affinity(2) end, "queue_affinity: q = 2: must be an integer from 0 to 1")
  end)

  it("sends legacy opcodes where asked, and they work on this kernel", function()
    assert(require("ublk.control").set_legacy(true))
    local ok, err = pcall(function()
      local d <close> = assert(ublk.new { size = 2^20, queues = 1 })
      local info = assert(d:info())
      assert.are.equal(d.id, info.id)
      assert.are.equal(2^20, assert(d:params()).size)
    end)
    assert(require("ublk.control").set_legacy(false))
    assert(ok, err)
    no_devices_left()
  end)

  it("traces every control command, decoded, before and after the kernel", function()
    local path = os.tmpname()
    local out = assert(io.open(path, "w"))
    ublk.trace(true, out)
    local d = assert(ublk.new { size = 2^20, queues = 1, depth = 16 })
    d:delete()
    ublk.trace(false)
    out:close()
    local text = assert(run.slurp(path))
    os.remove(path)
    assert.matches("%-> ADD_DEV %(ioctl 0xc0207504%) dev_id=%-1 queue_id=%-1 len=64", text)
    assert.matches("%+2   2  queue_depth%s+= 16", text)
    assert.matches("<%- ADD_DEV = 0", text)
    assert.matches("%-> SET_PARAMS", text)
    assert.matches("basic.dev_sectors%s+= 2048", text)
    assert.matches("<%- DEL_DEV = 0", text)
  end)

  it("lists devices with `ublk list` and deletes them with `ublk del`", function()
    local d = assert(ublk.new { size = 2^20, queues = 1, depth = 8, id = 3 })
    local code, out = run.ublk("list")
    assert.are.equal(0, code)
    assert.matches("ID%s+STATE%s+SERVER%s+QUEUES%s+DEPTH", out)
    assert.matches("\n3%s+dead%s+%-%s+1%s+8%s+512 KiB%s+0:0", out) -- never served: no server to be gone
    code, out = run.ublk("list --json")
    assert.are.equal(0, code)
    assert.matches('"id": 3', out)
    assert.matches('"depth": 8', out)
    code, out = run.ublk("del 3")
    assert.are.equal(0, code)
    assert.matches("deleted ublk device 3", out)
    assert(d:delete())
    no_devices_left()
    local err
    code, out, err = run.ublk("del 3")
    assert.are.equal(1, code)
    assert.matches("ENODEV", err)
    assert.are.equal("", out)
    code, out = run.ublk("list")
    assert.are.equal(0, code)
    assert.are.equal("no ublk devices\n", out)
  end)

  it("runs `ublk doctor` and `ublk features` with exit status 0", function()
    local dev = assert(ublk.new { size = 2^20 }) -- root's: counted in all, not against ublks_max
    local code, out = run.ublk("doctor")
    assert(dev:delete())
    assert.are.equal(0, code, out)
    assert.matches("ok%s+module%s+ublk_drv is loaded", out)
    assert.matches("ok%s+features%s+GET_FEATURES = 0x", out)
    -- both Debian kernels carry 80bdfbb3545b (6.12 since 6.12.31): ublks_max counts unprivileged devices only
    assert.matches("ok%s+device limit%s+ublks_max = 64 limits unprivileged devices only %([^\n]*%): 0 of 64 exist %(ublk devices in all: 1%)", out)
    assert.matches("ok%s+ADD_DEV bug%s+Linux [^\n]* is not a release known to break ADD_DEV", out)
    assert.matches("ok%s+mount namespace%s+this process %(mnt:%[%d+%]%) shares the mount namespace of PID 1", out)
    if kernel.series == "6.12" then
      assert.matches("WARN%s+restart%s+Linux 6%.12[^\n]*: a stopped device cannot be started again", out)
    end
    if kernel.series == "7.3" then
      assert.matches("ok%s+restart%s+Linux 7%.3[^\n]*: a stopped device can be started again", out)
    end
    code, out = run.ublk("features")
    assert.are.equal(0, code)
    assert.matches("cmd_ioctl_encode", out)
  end)

  it("applies newer parameter blocks where the kernel has them, and says so where not", function()
    local d, msg, errno = ublk.new { size = 2^20, dma_alignment = 512, max_segments = 64, max_segment_size = 65536 }
    if kernel.series == "6.12" then
      assert.is_nil(d)
      assert.are.equal(95, errno)
      assert.matches("the running kernel ignored dma_alignment = 512: its ublk driver has no DMA_ALIGN parameter block", msg)
      no_devices_left()
    else
      assert(d, msg)
      local p = assert(d:params())
      assert.are.equal(512, p.dma_alignment)
      assert.are.equal(64, p.max_segments)
      assert.are.equal(65536, p.max_segment_size)
      d:delete()
    end
  end)

  it("requests a feature flag where the kernel has it, and refuses it where not", function()
    if kernel.series == "6.12" then
      assert.has_error(function() ublk.new { size = 2^20, flags = { "update_size" } } end,
        "ublk.new: flags = update_size: is not supported by the running kernel (see `ublk features`)")
    else
      local d <close> = assert(ublk.new { size = 2^20, flags = { "update_size" } })
      assert.matches("update_size", table.concat(assert(d:params()).flags, ","))
    end
    local d <close> = assert(ublk.new { size = 2^20, flags = { "user_copy" } })
    assert.are.same({ "user_copy" }, assert(d:params()).flags)
  end)
end)

describe("examples/inspect.lua", function()
  it("creates, shows and deletes a device", function()
    local code, out, err = run.run(run.ours_env() .. " lua5.4 examples/inspect.lua")
    assert.are.equal(0, code, err)
    assert.matches("^created ublk device (%d+): control node /dev/ublkc%1, disk /dev/ublkb%1", out)
    assert.matches("state dead, %d queues of depth 64, requests up to 512 KiB, owner 0:0", out)
    assert.matches("size 64 MiB in 4096%-byte blocks", out)
    assert.matches("write cache yes, FUA no, discard yes %(granularity 4096, up to 64 MiB%)", out)
    assert.matches("queue 0 runs on CPUs %d", out)
    assert.matches("deleted ublk device %d+; devices left: 0\n$", out)
  end)
end)
