-- Every option is checked before anything reaches the kernel; errors name the key, value and range.
local params = require("ublk.params")
local core = require("ublk.core")
local page = core.const.PAGE_SIZE

local function err_of(opts)
  local ok, msg = pcall(params.check, opts)
  assert.is_false(ok, "expected an error")
  return msg
end

describe("ublk.new options", function()
  local cases = {
    { { size = 2^20, queues = 0 }, "ublk.new: queues = 0: must be a whole number from 1 to 4096" },
    { { size = 2^20, queues = 4097 }, "ublk.new: queues = 4097: must be a whole number from 1 to 4096" },
    { { size = 2^20, depth = 0 }, "ublk.new: depth = 0: must be a whole number from 1 to 4096" },
    { { size = 2^20, depth = 5000 }, "ublk.new: depth = 5000: must be a whole number from 1 to 4096" },
    { { size = 2^20, block_size = 1000 }, "ublk.new: block_size = 1000: must be a power of two from 512 to 4 KiB (the page size)" },
    { { size = 2^20, block_size = 256 }, "ublk.new: block_size = 256: must be a power of two from 512 to 4 KiB (the page size)" },
    { { size = 2^20, block_size = 2 * page }, ("ublk.new: block_size = %d: must be a power of two from 512 to 4 KiB (the page size)"):format(2 * page) },
    { { size = 1000 }, "ublk.new: size = 1000: must be a positive multiple of block_size (512)" },
    { { size = 4096 + 512, block_size = 4096 }, "ublk.new: size = 4608: must be a positive multiple of block_size (4096)" },
    { { size = 2^20, max_io = 1000 }, "ublk.new: max_io = 1000: must be a multiple of the page size (4096) from 4 KiB to 32 MiB" },
    { { size = 2^20, max_io = 64 * 2^20 }, "ublk.new: max_io = 67108864.0: must be a multiple of the page size (4096) from 4 KiB to 32 MiB" },
    { { size = 2^20, id = -1 }, "ublk.new: id = -1: must be a device number from 0 to 1048575" },
    { { size = 2^20, read_only = "yes" }, "ublk.new: read_only = yes: must be true or false" },
    { { size = 2^20, fua = true }, "ublk.new: fua = true: needs volatile_cache = true (FUA only means something with a write cache)" },
    { { size = 2^20, physical_block_size = 256 }, "ublk.new: physical_block_size = 256: must be a power of two from 512 to 1 MiB (at least block_size)" },
    { { size = 2^20, discard = false, max_discard = 4096 }, "ublk.new: discard = false: is false but discard limits were given" },
    { { size = 2^20, max_discard_segments = 2 }, "ublk.new: max_discard_segments = 2: must be 1 (the kernel takes single-range discards only): from 1 to 1" },
    { { size = 2^20, chunk_size = 1000 }, "ublk.new: chunk_size = 1000: must be 0 or a power of two from block_size to 1 TiB" },
    { { size = 2^20, dma_alignment = 3 }, "ublk.new: dma_alignment = 3: must be a power of two from 1 to 2 KiB (below the page size)" },
    { { size = 2^20, seg_boundary = 1024 }, "ublk.new: seg_boundary = 1024: must be a power of two of at least 4096 bytes" },
    { { size = 2^20, virt_boundary = 4096, max_segments = 8 }, "ublk.new: virt_boundary = 4096: cannot be " ..
      "combined with seg_boundary/max_segment_size/max_segments" },
    { { size = 2^20, flags = { "warp_drive" } }, "ublk.new: flags = warp_drive: is not a ublk feature (see `ublk features`)" },
    { { size = "lots" }, "ublk.new: size = lots: expected a whole number of bytes ('lots' is not a size (examples: 4096, 512K, 64M, 1G))" },
    { { size = 2^20, colour = "blue" }, "ublk.new: unknown option 'colour' (known: " },
    { { queues = 1 }, "ublk.new: size is required (bytes, a multiple of block_size)" },
    { { size = 2^20, recovery = "sometimes" }, "ublk.new: recovery = sometimes: must be 'requeue', 'fail_in_flight' or 'fail_io' (or nil: none)" },
    { { size = 2^20, recovery = "requeue", flags = { "user_recovery" } },
      "ublk.new: flags = user_recovery: comes with recovery = 'requeue': give the mode, not the flag" },
  }
  for _, c in ipairs(cases) do
    it("refuses: " .. c[2]:sub(11, 60), function()
      local msg = err_of(c[1])
      assert.are.equal(c[2], msg:sub(1, #c[2]))
    end)
  end

  it("refuses a flag the running kernel lacks", function()
    local ok, msg = pcall(params.check, { size = 2^20, flags = { "user_copy" } }, 0x1fe & ~(1 << 7))
    assert.is_false(ok)
    assert.are.equal("ublk.new: flags = user_copy: is not supported by the running kernel (see `ublk features`)", msg)
  end)

  it("turns each recovery mode into the kernel's flags, and back; a mode the kernel lacks names the release", function()
    local want = { requeue = { "user_recovery", "user_recovery_reissue" }, fail_in_flight = { "user_recovery" },
      fail_io = { "user_recovery", "user_recovery_fail_io" } }
    for mode, flags in pairs(want) do
      local o = params.check({ size = 2^20, recovery = mode }, 0x3fe)
      assert.are.same(flags, o.flags)
      assert.are.equal(mode, params.recovery_of(o.flags))
      local info = core.unpack("dev_info", params.dev_info(o))
      assert.are.equal(params.flags_mask(flags), info.flags)
    end
    assert.is_nil(params.recovery_of { "user_copy" })
    -- 6.12's features: bits 1 to 8, without USER_RECOVERY_FAIL_IO (bit 9)
    local ok, msg = pcall(params.check, { size = 2^20, recovery = "fail_io" }, 0x1fe)
    assert.is_false(ok)
    assert.are.equal("ublk.new: recovery = fail_io: needs UBLK_F_USER_RECOVERY_FAIL_IO, which the running kernel's " ..
      "ublk driver lacks (Linux 6.13 brings it)", msg)
    assert.are.same({ "user_recovery", "user_recovery_reissue" }, params.check({ size = 2^20, recovery = "requeue" }, 0x1fe).flags)
  end)

  it("fills the defaults and accepts sizes as text", function()
    local o = params.check { size = "64M" }
    assert.are.equal(64 * 2^20, o.size)
    assert.are.equal(1, o.queues)
    assert.are.equal(128, o.depth)
    assert.are.equal(512, o.block_size)
    assert.are.equal(512 * 1024, o.max_io)
    assert.is_false(o.read_only)
    assert.is_false(o.discard)
  end)

  it("encodes params as the kernel reads them and decodes them back", function()
    local o = params.check { size = 2^30, block_size = 4096, max_io = 2^20, read_only = true, rotational = true,
      volatile_cache = true, fua = true, discard = true, chunk_size = 2^20, dma_alignment = 512,
      max_segments = 64, max_segment_size = 65536, seg_boundary = 2^32 }
    local b = params.encode(o)
    assert.are.equal(152, #b)
    local raw = core.unpack("params", b)
    assert.are.equal(12, raw["basic.logical_bs_shift"])
    assert.are.equal(2^30 // 512, raw["basic.dev_sectors"])
    assert.are.equal(2048, raw["basic.max_sectors"])
    assert.are.equal(15, raw["basic.attrs"])
    assert.are.equal(511, raw["dma.alignment"])
    assert.are.equal(2^32 - 1, raw["seg.seg_boundary_mask"])
    local back = params.decode(b)
    for _, k in ipairs { "size", "block_size", "physical_block_size", "io_min", "io_opt", "max_io", "chunk_size",
        "read_only", "rotational", "volatile_cache", "fua", "discard", "discard_granularity", "max_discard",
        "max_write_zeroes", "max_discard_segments", "dma_alignment", "seg_boundary", "max_segment_size", "max_segments" } do
      assert.are.equal(o[k], back[k], k)
    end
  end)

  it("parses sizes", function()
    assert.are.equal(4096, params.parse_size("4k"))
    assert.are.equal(2^30, params.parse_size("1G"))
    assert.are.equal(512 * 1024, params.parse_size("512KiB"))
    assert.is_nil(params.parse_size("12 parsecs"))
  end)
end)
