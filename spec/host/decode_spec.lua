-- `ublk decode` on the seed report's own dumps, and on SQEs built the right and the wrong way.
local ublk = require("ublk")
local decode = require("ublk.decode")
local core = require("ublk.core")

-- From the seed (shared/seeds): the Go server's dev-info buffer and control header, as it printed them.
local SEED_DEV_INFO = "010020000000000000001000ffffffffca2600000000000000000000000000004000000000000000000000000000000000000000000000000000000000000000"
local SEED_CTRL_CMD = "ffffffffffff4000c0811101c000000040000000000000000000000000000000"

local function field(t, name)
  for _, f in ipairs(t.fields) do if f.name == name then return f end end
end

local function has_warning(t, pattern)
  for _, w in ipairs(t.warnings) do if w:find(pattern) then return true end end
  return false
end

-- An SQE as the seed describes it: opcode 50, fd 3, addr and len in the SQE, legacy cmd_op 4.
local function seed_sqe()
  local b = string.pack("<BBI2i4I4I4I8I4I4I8", 50, 0, 0, 3, 4, 0, 824651645376, 64, 0, 824651645376)
  b = b .. string.rep("\0", 48 - #b) .. decode.from_hex(SEED_CTRL_CMD)
  return b .. string.rep("\0", 128 - #b)
end

describe("ublk.decode", function()
  it("reads the seed's dev-info as the kernel does: flags 0 at offset 24, 0x40 in ublksrv_flags at 32", function()
    local t = assert(ublk.decode("dev-info", decode.from_hex(SEED_DEV_INFO)))
    assert.are.equal(24, field(t, "flags").offset)
    assert.are.equal("0x0", field(t, "flags").value)
    assert.are.equal(32, field(t, "ublksrv_flags").offset)
    assert.are.equal("0x40", field(t, "ublksrv_flags").value)
    assert.are.equal(40, field(t, "owner_uid").offset)
    assert.are.equal(0, field(t, "owner_uid").value) -- the author's view said 1000
    assert.are.equal(0, field(t, "owner_gid").value)
    assert.are.equal(9930, field(t, "ublksrv_pid").value)
    assert.are.equal(1, field(t, "nr_hw_queues").value)
    assert.are.equal(32, field(t, "queue_depth").value)
    assert.are.equal(1048576, field(t, "max_io_buf_bytes").value)
    assert.is_true(has_warning(t, "flags %(offset 24%) is 0 but ublksrv_flags %(offset 32%) is 0x40 %(cmd_ioctl_encode%)"))
  end)

  it("reads the seed's control header: len is 64, data[0] is not where ADD_DEV takes flags", function()
    local t = assert(ublk.decode("ctrl-cmd", decode.from_hex(SEED_CTRL_CMD)))
    assert.are.equal(0xffffffff, field(t, "dev_id").value)
    assert.are.equal(0xffff, field(t, "queue_id").value)
    assert.are.equal(64, field(t, "len").value)
    assert.are.equal("0xc0011181c0", field(t, "addr").value)
    assert.are.equal("0x40", field(t, "data").value)
    assert.is_true(has_warning(t, "ADD_DEV never reads data%[0%]"))
  end)

  it("names opcode 50 as IORING_OP_WAITID and says the command never reached ublk", function()
    local t = assert(ublk.decode("sqe", seed_sqe()))
    assert.are.equal("IORING_OP_WAITID", field(t, "opcode").note)
    assert.are.equal("ADD_DEV (legacy)", field(t, "cmd_op").note)
    assert.is_true(has_warning(t, "opcode 50 is IORING_OP_WAITID, not IORING_OP_URING_CMD %(46%)"))
    assert.is_true(has_warning(t, "waitid prep rejects a non%-zero addr"))
    assert.is_true(has_warning(t, "legacy opcode"))
    assert.is_true(has_warning(t, "sqe.addr/len are not read"))
    assert.are.equal(64, field(t.ctrl_cmd, "len").value)
  end)

  it("accepts a correct ADD_DEV SQE without opcode warnings", function()
    local b = string.pack("<BBI2i4I4I4", 46, 0, 0, 3, core.commands.ADD_DEV.ioctl, 0)
    b = b .. string.rep("\0", 48 - #b) .. core.pack("ctrl_cmd", { dev_id = 0xffffffff, queue_id = 0xffff, len = 64, addr = 0x1000 })
    b = b .. string.rep("\0", 128 - #b)
    local t = assert(ublk.decode("sqe", b))
    assert.are.equal("ADD_DEV (ioctl-encoded)", field(t, "cmd_op").note)
    assert.are.same({}, t.warnings)
    assert.are.same({}, t.ctrl_cmd.warnings)
  end)

  it("warns that a 64-byte SQE cannot carry the control header", function()
    local t = assert(ublk.decode("sqe", seed_sqe():sub(1, 64)))
    assert.is_true(has_warning(t, "128%-byte SQE"))
    assert.is_nil(t.ctrl_cmd)
  end)

  it("decodes params and applies the kernel's checks", function()
    local b = core.pack("params", { len = 152, types = 1 | 4, ["basic.logical_bs_shift"] = 13, ["basic.physical_bs_shift"] = 12 })
    local t = assert(ublk.decode("params", b))
    assert.are.equal("basic|devt", field(t, "types").note)
    assert.is_true(has_warning(t, "logical_bs_shift 13 > physical_bs_shift 12"))
    assert.is_true(has_warning(t, "devt is read%-only"))
  end)

  it("refuses wrong lengths and bad hex with a message", function()
    local t, msg = ublk.decode("dev-info", "short")
    assert.is_nil(t)
    assert.are.equal("dev-info is 64 bytes, got 5", msg)
    assert.are.same({ nil, "odd number of hex digits (3)" }, { decode.from_hex("abc") })
    assert.are.same({ nil, "not hex: 'zz'" }, { decode.from_hex("zz") })
    assert.are.same({ nil, "unknown kind 'pie' (sqe, ctrl-cmd, dev-info, params)" }, { ublk.decode("pie", "") })
  end)
end)
