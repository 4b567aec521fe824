-- The structs shared with the kernel: sizes and offsets as the kernel header lays them out.
local core = require("ublk.core")

local expected = {
  ctrl_cmd = { size = 32, dev_id = 0, queue_id = 4, len = 6, addr = 8, data = 16, dev_path_len = 24, pad = 26, reserved = 28 },
  dev_info = { size = 64, nr_hw_queues = 0, queue_depth = 2, state = 4, pad0 = 6, max_io_buf_bytes = 8, dev_id = 12,
               ublksrv_pid = 16, pad1 = 20, flags = 24, ublksrv_flags = 32, owner_uid = 40, owner_gid = 44,
               reserved1 = 48, reserved2 = 56 },
  params = { size = 152, len = 0, types = 4, ["basic.attrs"] = 8, ["basic.logical_bs_shift"] = 12,
             ["basic.physical_bs_shift"] = 13, ["basic.io_opt_shift"] = 14, ["basic.io_min_shift"] = 15,
             ["basic.max_sectors"] = 16, ["basic.chunk_sectors"] = 20, ["basic.dev_sectors"] = 24,
             ["basic.virt_boundary_mask"] = 32, ["discard.discard_alignment"] = 40,
             ["discard.discard_granularity"] = 44, ["discard.max_discard_sectors"] = 48,
             ["discard.max_write_zeroes_sectors"] = 52, ["discard.max_discard_segments"] = 56,
             ["devt.char_major"] = 60, ["devt.disk_minor"] = 72, ["zoned.max_open_zones"] = 76,
             ["dma.alignment"] = 108, ["seg.seg_boundary_mask"] = 120, ["seg.max_segment_size"] = 128,
             ["seg.max_segments"] = 132, ["integrity.flags"] = 136, ["integrity.tag_size"] = 146 },
  sqe = { size = 64, opcode = 0, flags = 1, ioprio = 2, fd = 4, cmd_op = 8, __pad1 = 12, addr = 16, len = 24,
          uring_cmd_flags = 28, user_data = 32, buf_index = 40, personality = 42, splice_fd_in = 44, addr3 = 48 },
  io_desc = { size = 24, op_flags = 0, nr_sectors = 4, start_sector = 8, addr = 16 },
  io_cmd = { size = 16, q_id = 0, tag = 2, result = 4, addr = 8 },
}

describe("struct layouts", function()
  for kind, want in pairs(expected) do
    it(kind .. " has the kernel's size and field offsets", function()
      local l = core.layout(kind)
      assert.are.equal(want.size, l.size)
      local seen = 0
      for _, f in ipairs(l.fields) do
        if want[f.name] then
          assert.are.equal(want[f.name], f.offset, kind .. "." .. f.name)
          seen = seen + 1
        end
        assert.is_true(f.offset + f.size <= l.size, kind .. "." .. f.name .. " ends inside the struct")
      end
      local n = 0
      for k in pairs(want) do if k ~= "size" then n = n + 1 end end
      assert.are.equal(n, seen, "every expected field exists")
    end)
  end

  it("packs and unpacks a dev_info field by field, little-endian", function()
    local b = core.pack("dev_info", { nr_hw_queues = 2, queue_depth = 64, dev_id = 0xffffffff, flags = 0x40, ublksrv_pid = -1 })
    assert.are.equal(64, #b)
    assert.are.equal("\2\0\64\0", b:sub(1, 4))
    assert.are.equal("\255\255\255\255", b:sub(13, 16))
    assert.are.equal(0x40, string.unpack("<I8", b, 25))
    local t = core.unpack("dev_info", b)
    assert.are.equal(-1, t.ublksrv_pid)
    assert.are.equal(0xffffffff, t.dev_id)
  end)

  it("refuses a value that does not fit its field", function()
    assert.has_error(function() core.pack("dev_info", { nr_hw_queues = 70000 }) end,
      "dev_info.nr_hw_queues: 70000 does not fit in 2 bytes")
    assert.has_error(function() core.pack("dev_info", { nr_hw_queues = "x" }) end,
      "dev_info.nr_hw_queues: expected an integer, got string")
  end)

  it("encodes the ioctl opcodes as the kernel header does", function()
    assert.are.equal(0xc0207504, core.commands.ADD_DEV.ioctl)
    assert.are.equal(0x80207513, core.commands.GET_FEATURES.ioctl)
    assert.are.equal(0x80207512, core.commands.GET_DEV_INFO2.ioctl)
    assert.are.equal(0xc0107520, core.io_commands.FETCH_REQ.ioctl)
    assert.are.equal(46, core.const.IORING_OP_URING_CMD)
    assert.are.equal("cmd_ioctl_encode", core.flag_names[6])
  end)
end)
