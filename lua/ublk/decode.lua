--- Read bytes as the kernel reads them: an SQE, a control header, a dev_info, a params block.
-- Each field comes with its offset; warnings flag values that cannot be what the sender meant.
-- The offsets come from the C structs (core.layout), the same ones the `_Static_assert`s pin.
-- @module ublk.decode
local core = require("ublk.core")
local params = require("ublk.params")

local M = {}

-- io_uring opcodes by number (include/uapi/linux/io_uring.h), for naming a wrong one.
local io_uring_ops = {
  [0] = "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE",
  "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL",
  "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE",
  "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE", "PROVIDE_BUFFERS",
  "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT",
  "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
  "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV",
  "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC", "EPOLL_WAIT", "READV_FIXED",
  "WRITEV_FIXED", "PIPE",
}
assert(io_uring_ops[46] == "URING_CMD" and io_uring_ops[50] == "WAITID")
M.io_uring_ops = io_uring_ops

--- Device states by number (UBLK_S_DEV_*).
M.state_names = { [0] = "dead", "live", "quiesced", "fail_io" }

--- Hex text ("de ad be ef", "0xdeadbeef", with newlines) to bytes.
-- @return bytes, or nil and a message
function M.from_hex(text)
  if type(text) ~= "string" then return nil, "expected a hex string" end
  local clean = text:gsub("0[xX]", ""):gsub("[%s:,_]", "")
  if #clean % 2 ~= 0 then return nil, ("odd number of hex digits (%d)"):format(#clean) end
  if clean:find("[^%x]") then return nil, ("not hex: '%s'"):format(clean:match("[^%x]+")) end
  return (clean:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function hex(n, width)
  if width then return ("0x%0" .. width .. "x"):format(n) end
  return ("0x%x"):format(n)
end

-- control and I/O commands by number (the ioctl "nr")
local command_by_nr = {}
for _, c in pairs(core.commands) do command_by_nr[c.nr] = c end
for _, c in pairs(core.io_commands) do command_by_nr[c.nr] = c end

--- The command named by a control cmd_op: name, "legacy"|"ioctl", and notes.
function M.cmd_op(op)
  local notes = {}
  local nr, typ = op & 0xff, (op >> 8) & 0xff
  local c = command_by_nr[nr]
  if op <= 0xff then
    if not c then return nil, "unknown", { ("%s is not a ublk command number"):format(hex(op)) } end
    if core.commands[c.name] and not c.has_legacy then
      notes[#notes + 1] = ("%s has no legacy number: the kernel only accepts it ioctl-encoded (%s)"):format(c.name, hex(c.ioctl))
    else
      notes[#notes + 1] = ("legacy opcode: accepted only where CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=y; the ioctl-encoded UBLK_U_%s%s is %s"):format(
        core.commands[c.name] and "CMD_" or "IO_", c.name, hex(c.ioctl))
    end
    return c.name, "legacy", notes
  end
  if typ ~= 0x75 then
    return nil, "unknown", { ("%s is neither a legacy number nor ioctl-encoded with type 'u' (0x75): the kernel answers -EOPNOTSUPP"):format(hex(op)) }
  end
  if not c then return nil, "ioctl", { ("ioctl nr %s is not a ublk command this library knows"):format(hex(nr)) } end
  if op ~= c.ioctl then
    notes[#notes + 1] = ("direction/size bits differ from UBLK_U_%s (%s): the kernel dispatches on nr only%s"):format(
      c.name, hex(c.ioctl), c.name == "GET_FEATURES" and ", except GET_FEATURES, which must match exactly" or "")
  end
  return c.name, "ioctl", notes
end

local function add(t, name, value, note)
  local f
  for _, x in ipairs(t.layout.fields) do if x.name == name then f = x end end
  t.fields[#t.fields + 1] = { name = name, offset = f.offset, size = f.size, value = value, note = note }
end

local function decode_struct(kind, bytes)
  local layout = core.layout(kind)
  local v = core.unpack(kind, bytes)
  local t = { kind = kind, ctype = layout.ctype, size = layout.size, values = v, fields = {}, warnings = {}, layout = layout }
  return t, v
end

local function warn(t, fmt, ...) t.warnings[#t.warnings + 1] = fmt:format(...) end

local function flags_note(mask)
  if mask == 0 then return "none" end
  return table.concat(params.flag_names(mask), "|")
end

local function swapped16(n) return ((n & 0xff) << 8) | (n >> 8) end

--- A control header (struct ublksrv_ctrl_cmd, 32 bytes). `command` (optional) names what it is for.
function M.ctrl_cmd(bytes, command)
  local t, v = decode_struct("ctrl_cmd", bytes)
  add(t, "dev_id", v.dev_id, v.dev_id == 0xffffffff and "-1: ADD_DEV picks a free id" or nil)
  add(t, "queue_id", v.queue_id, v.queue_id == 0xffff and "-1: not about one queue" or nil)
  add(t, "len", v.len, "bytes at addr")
  add(t, "addr", hex(v.addr), nil)
  add(t, "data", hex(v.data), nil)
  add(t, "dev_path_len", v.dev_path_len, v.dev_path_len > 0 and "a /dev/ublkcN path starts the buffer" or nil)
  add(t, "pad", v.pad)
  add(t, "reserved", v.reserved)
  if v.queue_id ~= 0xffff and (command == nil or command == "ADD_DEV") then
    warn(t, "queue_id is %s: ADD_DEV requires 0xffff (-1) and answers -EINVAL otherwise", hex(v.queue_id))
  end
  if v.len ~= 0 and v.addr == 0 then warn(t, "len is %d but addr is 0: the kernel answers -EINVAL", v.len) end
  if v.len > 0xff and v.len & 0xff == 0 and ({ [8] = true, [64] = true, [112] = true, [136] = true, [152] = true })[swapped16(v.len)] then
    warn(t, "len reads as %d (bytes %02x %02x, little-endian); %d was probably meant: the field was written big-endian",
      v.len, v.len & 0xff, v.len >> 8, swapped16(v.len))
  end
  if (command == nil or command == "ADD_DEV") and v.data ~= 0 then
    local what = v.data < (1 << 20) and flags_note(v.data) or nil
    warn(t, "data[0] = %s%s: ADD_DEV never reads data[0]; device flags belong in dev_info.flags (offset 24 of the buffer)",
      hex(v.data), what and (" (as flags: " .. what .. ")") or "")
  end
  if command == "ADD_DEV" and v.len < 64 then warn(t, "ADD_DEV needs len >= 64 (struct ublksrv_ctrl_dev_info)") end
  if command == "GET_FEATURES" and v.len ~= 8 then warn(t, "GET_FEATURES needs len = 8 exactly") end
  if v.pad ~= 0 or v.reserved ~= 0 then warn(t, "pad/reserved are not zero") end
  return t
end

--- struct ublksrv_ctrl_dev_info (64 bytes), as ADD_DEV reads it or GET_DEV_INFO writes it.
function M.dev_info(bytes)
  local t, v = decode_struct("dev_info", bytes)
  local C = core.const
  add(t, "nr_hw_queues", v.nr_hw_queues, ("1..%d; the kernel caps it at the CPU count"):format(C.MAX_NR_QUEUES))
  add(t, "queue_depth", v.queue_depth, ("1..%d"):format(C.MAX_QUEUE_DEPTH))
  add(t, "state", v.state, M.state_names[v.state] or "unknown")
  add(t, "pad0", v.pad0, v.pad0 ~= 0 and "io_desc_size on Linux 7.3+ (set by the kernel)" or nil)
  add(t, "max_io_buf_bytes", v.max_io_buf_bytes, params.human(v.max_io_buf_bytes))
  add(t, "dev_id", v.dev_id, v.dev_id == 0xffffffff and "-1: let the kernel choose" or nil)
  add(t, "ublksrv_pid", v.ublksrv_pid)
  add(t, "pad1", v.pad1)
  add(t, "flags", hex(v.flags), flags_note(v.flags))
  add(t, "ublksrv_flags", hex(v.ublksrv_flags), "the server's own; never read by the kernel")
  add(t, "owner_uid", v.owner_uid, "set by the kernel")
  add(t, "owner_gid", v.owner_gid, "set by the kernel")
  add(t, "reserved1", v.reserved1)
  add(t, "reserved2", v.reserved2)
  if v.nr_hw_queues < 1 or v.nr_hw_queues > C.MAX_NR_QUEUES then
    warn(t, "nr_hw_queues = %d: the kernel wants 1..%d (-EINVAL)", v.nr_hw_queues, C.MAX_NR_QUEUES)
  end
  if v.queue_depth < 1 or v.queue_depth > C.MAX_QUEUE_DEPTH then
    warn(t, "queue_depth = %d: the kernel wants 1..%d (-EINVAL)", v.queue_depth, C.MAX_QUEUE_DEPTH)
  end
  if v.max_io_buf_bytes % C.PAGE_SIZE ~= 0 then
    warn(t, "max_io_buf_bytes = %d is not a multiple of the page size: the kernel rounds it down to %d",
      v.max_io_buf_bytes, v.max_io_buf_bytes - v.max_io_buf_bytes % C.PAGE_SIZE)
  end
  if v.flags == 0 and v.ublksrv_flags ~= 0 then
    warn(t, "flags (offset 24) is 0 but ublksrv_flags (offset 32) is %s (%s): the kernel reads device flags " ..
      "at offset 24 only; a struct laid out differently put them in ublksrv_flags",
      hex(v.ublksrv_flags), flags_note(v.ublksrv_flags))
  end
  local unknown = v.flags >> 21
  if unknown ~= 0 then warn(t, "flags has bits the kernel may not know (%s): it drops them silently", hex(unknown << 21)) end
  if (v.owner_uid ~= 0 or v.owner_gid ~= 0) then
    warn(t, "owner_uid/owner_gid (offsets 40/44) are set by the kernel from the caller; the values sent (%d/%d) are ignored", v.owner_uid, v.owner_gid)
  end
  if v.pad1 ~= 0 or v.reserved1 ~= 0 or v.reserved2 ~= 0 then
    warn(t, "pad/reserved fields are not zero: the bytes are probably shifted against the struct")
  end
  if v.ublksrv_pid < 0 and v.ublksrv_pid ~= -1 then warn(t, "ublksrv_pid is negative (%d)", v.ublksrv_pid) end
  return t
end

--- struct ublk_params (SET_PARAMS / GET_PARAMS), up to 152 bytes; shorter input is zero-padded.
function M.params(bytes)
  local size = core.layout("params").size
  if #bytes < size then bytes = bytes .. string.rep("\0", size - #bytes) end
  local t, v = decode_struct("params", bytes)
  local C = core.const
  local names = {}
  for name, bit in pairs { basic = C.PARAM_TYPE_BASIC, discard = C.PARAM_TYPE_DISCARD, devt = C.PARAM_TYPE_DEVT,
    zoned = C.PARAM_TYPE_ZONED, dma = C.PARAM_TYPE_DMA_ALIGN, seg = C.PARAM_TYPE_SEGMENT,
    integrity = C.PARAM_TYPE_INTEGRITY } do
    if v.types & bit ~= 0 then names[#names + 1] = name end
  end
  table.sort(names)
  local present = {}
  for _, n in ipairs(names) do present[n] = true end
  add(t, "len", v.len, v.len == 0 and "0: the kernel refuses" or nil)
  add(t, "types", hex(v.types), table.concat(names, "|"))
  for _, f in ipairs(t.layout.fields) do
    local block = f.name:match("^(%w+)%.")
    if block and present[block] and not f.name:find("pad") and not f.name:find("reserved") then
      local val = v[f.name]
      local note
      if f.name:find("_shift$") then note = ("%d bytes"):format(1 << val)
      elseif f.name:find("_sectors$") then note = params.human(val << 9)
      elseif f.name:find("mask$") then val = hex(val) end
      add(t, f.name, val, note)
    end
  end
  if v.types & C.PARAM_TYPE_BASIC == 0 then warn(t, "the basic block is missing from types: SET_PARAMS answers -EINVAL") end
  if present.basic then
    local l, p = v["basic.logical_bs_shift"], v["basic.physical_bs_shift"]
    if l < 9 or (1 << l) > C.PAGE_SIZE then warn(t, "logical_bs_shift = %d: the kernel wants 9..%d (512 .. page size)", l, math.log(C.PAGE_SIZE, 2) // 1) end
    if l > p then warn(t, "logical_bs_shift %d > physical_bs_shift %d: -EINVAL", l, p) end
    if v["basic.dev_sectors"] == 0 then warn(t, "dev_sectors is 0: a device of size 0") end
  end
  if present.discard then
    if v["discard.max_discard_sectors"] ~= 0 and v["discard.max_discard_segments"] ~= 1 then
      warn(t, "max_discard_segments must be 1 when discards are enabled: -EINVAL")
    end
    if v["discard.discard_granularity"] == 0 then warn(t, "discard_granularity is 0: -EINVAL") end
  end
  if present.devt then warn(t, "devt is read-only: SET_PARAMS with it answers -EINVAL (GET_PARAMS fills it)") end
  if v.len > size then warn(t, "len %d is larger than this struct (%d): the kernel truncates to its own size", v.len, size) end
  return t
end

--- A 64- or 128-byte SQE. A URING_CMD to /dev/ublk-control carries the control header at offset 48.
function M.sqe(bytes)
  if #bytes ~= 64 and #bytes ~= 128 then
    error(("an SQE is 64 or 128 bytes, got %d"):format(#bytes), 0)
  end
  local t, v = decode_struct("sqe", bytes:sub(1, 64))
  t.size = #bytes
  local op = io_uring_ops[v.opcode] or "unknown"
  add(t, "opcode", v.opcode, "IORING_OP_" .. op)
  add(t, "flags", hex(v.flags))
  add(t, "ioprio", v.ioprio)
  add(t, "fd", v.fd)
  local name, enc, notes = M.cmd_op(v.cmd_op)
  add(t, "cmd_op", hex(v.cmd_op), name and (("%s (%s)"):format(name, enc == "ioctl" and "ioctl-encoded" or "legacy")) or "unknown command")
  add(t, "__pad1", v.__pad1)
  add(t, "addr", hex(v.addr))
  add(t, "len", v.len)
  add(t, "uring_cmd_flags", hex(v.uring_cmd_flags))
  add(t, "user_data", hex(v.user_data))
  add(t, "buf_index", v.buf_index)
  add(t, "personality", v.personality)
  add(t, "splice_fd_in", v.splice_fd_in)
  t.command = name
  if v.opcode ~= core.const.IORING_OP_URING_CMD then
    warn(t, "opcode %d is IORING_OP_%s, not IORING_OP_URING_CMD (%d): the command never reaches the ublk driver",
      v.opcode, op, core.const.IORING_OP_URING_CMD)
    if op == "WAITID" and (v.addr ~= 0 or v.buf_index ~= 0) then
      warn(t, "io_uring's waitid prep rejects a non-zero addr/buf_index with -EINVAL: that is where the -22 comes from")
    end
  end
  for _, n in ipairs(notes) do warn(t, "%s", n) end
  if v.__pad1 ~= 0 then warn(t, "__pad1 (offset 12) must be 0 for URING_CMD: -EINVAL") end
  if name and (v.addr ~= 0 or v.len ~= 0) then
    warn(t, "sqe.addr/len are not read by ublk's control commands: the buffer address and length go in the header (cmd area, offset 48)")
  end
  if #bytes == 64 then
    warn(t, "a 64-byte SQE has only 16 bytes of command area: ublk's control header needs a 128-byte SQE (IORING_SETUP_SQE128), else -EINVAL")
  else
    t.ctrl_cmd = M.ctrl_cmd(bytes:sub(49, 80), name)
  end
  return t
end

local kinds = {
  sqe = M.sqe, ["ctrl-cmd"] = M.ctrl_cmd, ctrl_cmd = M.ctrl_cmd,
  ["dev-info"] = M.dev_info, dev_info = M.dev_info, params = M.params,
}
M.kinds = { "sqe", "ctrl-cmd", "dev-info", "params" }

--- Decode `bytes` (raw, or hex text when `is_hex`) as `kind`.
-- @return the decoded table, or nil and a message
function M.decode(kind, bytes, is_hex)
  local f = kinds[kind]
  if not f then return nil, ("unknown kind '%s' (sqe, ctrl-cmd, dev-info, params)"):format(tostring(kind)) end
  if is_hex then
    local b, err = M.from_hex(bytes)
    if not b then return nil, err end
    bytes = b
  end
  local want = ({ ["ctrl-cmd"] = 32, ctrl_cmd = 32, ["dev-info"] = 64, dev_info = 64 })[kind]
  if want and #bytes ~= want then return nil, ("%s is %d bytes, got %d"):format(kind, want, #bytes) end
  if kind == "params" and (#bytes < 8 or #bytes > core.layout("params").size) then
    return nil, ("params is 8 to %d bytes, got %d"):format(core.layout("params").size, #bytes)
  end
  local ok, t = pcall(f, bytes)
  if not ok then return nil, t end
  return t
end

--- Lines a person reads: "offset size field = value  (note)", then the warnings.
function M.format(t, indent)
  indent = indent or ""
  local out = { ("%s%s (%d bytes)"):format(indent, t.ctype, t.size) }
  for _, f in ipairs(t.fields) do
    local line = ("%s  +%-3d %-2d %-30s = %-20s%s"):format(indent, f.offset, f.size, f.name, tostring(f.value),
      f.note and ("  " .. f.note) or "")
    out[#out + 1] = (line:gsub("%s+$", ""))
  end
  if t.ctrl_cmd then
    out[#out + 1] = indent .. "  command area (offset 48) as the control header:"
    out[#out + 1] = M.format(t.ctrl_cmd, indent .. "    ")
  end
  for _, w in ipairs(t.warnings) do out[#out + 1] = indent .. "  warning: " .. w end
  return table.concat(out, "\n")
end

return M
