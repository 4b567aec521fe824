--- The `ublk` command line. Exit status: 0 on success, 1 on a failure explained on stderr, 2 on misuse.
-- @module ublk.cli
local M = {}

local USAGE = [[
usage: ublk COMMAND [ARGS]

Linux userspace block devices (ublk), from Lua.

commands:
  doctor               what the running kernel supports for ublk, and the fix where it does not
  features             the kernel's ublk features (GET_FEATURES)
  list [--json]        every ublk device on the system
  del ID... | --all    delete devices
  decode KIND HEX...   read bytes as the kernel reads them (KIND: sqe, ctrl-cmd, dev-info, params)
  version              print the version

options:
  -h, --help           this text; `ublk COMMAND --help` for one command
  --trace              print every control command, decoded, to stderr
]]

local HELP = {
  doctor = [[
usage: ublk doctor

Checks the kernel version, the ublk_drv module, /dev/ublk-control, the io_uring_disabled sysctl,
128-byte SQEs and IORING_OP_URING_CMD, GET_FEATURES, legacy opcodes, unprivileged support and the
device limits. One line per check: ok or FAIL, then what was found and the fix.
Exit status 0 when ublk devices can be created here, 1 otherwise.
]],
  features = [[
usage: ublk features [--json]

The features the kernel's ublk driver reports (GET_FEATURES), by name, with the mask.
]],
  list = [[
usage: ublk list [--json]

Every ublk device on the system: id, state, queues, depth, max I/O, owner, server pid, flags.
]],
  del = [[
usage: ublk del ID...
       ublk del --all

Deletes the devices (DEL_DEV). The kernel waits until their server has closed /dev/ublkcN.
]],
  decode = [[
usage: ublk decode KIND HEX...

Reads a hex dump as the kernel reads it and flags what cannot be what the sender meant.
  sqe       a 64- or 128-byte SQE: the opcode by name, cmd_op (legacy or ioctl-encoded), and the
            command area (offset 48) as a control header
  ctrl-cmd  a 32-byte struct ublksrv_ctrl_cmd
  dev-info  a 64-byte struct ublksrv_ctrl_dev_info
  params    a struct ublk_params (8 to 152 bytes)
HEX may be split over several arguments, with spaces, colons or 0x prefixes; "-" reads standard input.
]],
  version = "usage: ublk version\n",
}

local function out(fmt, ...) io.stdout:write(fmt:format(...), "\n") end
local function err(fmt, ...) io.stderr:write("ublk: ", fmt:format(...), "\n") end

local function misuse(fmt, ...)
  err(fmt, ...)
  io.stderr:write("Try 'ublk --help'.\n")
  return 2
end

-- A small JSON encoder: tables with only positive integer keys are arrays.
local function json(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "table" then
    local n = #v
    local is_array = n > 0 or next(v) == nil
    for k in pairs(v) do if math.type(k) ~= "integer" or k < 1 or k > n then is_array = false end end
    local inner = indent .. "  "
    local parts = {}
    if is_array then
      for _, x in ipairs(v) do parts[#parts + 1] = inner .. json(x, inner) end
      if #parts == 0 then return "[]" end
      return "[\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local x = v[k]
      if x == nil then x = v[tonumber(k)] end
      parts[#parts + 1] = ("%s%s: %s"):format(inner, json(k), json(x, inner))
    end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return ({ ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t" })[c] or ("\\u%04x"):format(c:byte())
    end) .. '"'
  elseif t == "number" or t == "boolean" then
    return tostring(v)
  end
  return "null"
end
M.json = json

local commands = {}

function commands.doctor(ublk)
  local r = ublk.doctor()
  for _, c in ipairs(r.checks) do
    out("%-4s  %-16s %s", c.ok and "ok" or "FAIL", c.name, c.detail)
  end
  out("%s", r.ok and "ublk devices can be created here." or "ublk devices cannot be created here: see FAIL above.")
  return r.ok and 0 or 1
end

function commands.features(ublk, args)
  local f, msg = ublk.features()
  if not f then err("%s", msg) return 1 end
  if args.json then out("%s", json(f)) return 0 end
  out("features 0x%x (ublk driver of Linux %s)", f.mask, (io.open("/proc/sys/kernel/osrelease") or io.stdin):read("l") or "?")
  for _, n in ipairs(f.names) do out("  %s", n) end
  out("opcodes: %s%s", f.ioctl_encode and "ioctl-encoded" or "legacy only",
    f.legacy_opcodes and "; legacy also accepted" or "; legacy refused")
  return 0
end

function commands.list(ublk, args)
  local devs, msg = ublk.list()
  if not devs then err("%s", msg) return 1 end
  if args.json then out("%s", json(devs)) return 0 end
  if #devs == 0 then out("no ublk devices") return 0 end
  out("%-4s %-9s %6s %6s %9s %11s %7s  %s", "ID", "STATE", "QUEUES", "DEPTH", "MAX_IO", "OWNER", "PID", "FLAGS")
  for _, d in ipairs(devs) do
    out("%-4d %-9s %6d %6d %9s %11s %7s  %s", d.id, d.state, d.queues, d.depth,
      require("ublk.params").human(d.max_io), d.owner_uid .. ":" .. d.owner_gid,
      d.pid > 0 and tostring(d.pid) or "-", table.concat(d.flags, ","))
  end
  return 0
end

function commands.del(ublk, args)
  local ids = {}
  if args.all then
    local devs, msg = ublk.list()
    if not devs then err("%s", msg) return 1 end
    for _, d in ipairs(devs) do ids[#ids + 1] = d.id end
  else
    if #args == 0 then return misuse("del: name a device id, or --all") end
    for _, a in ipairs(args) do
      local id = math.tointeger(tonumber(a))
      if not id or id < 0 then return misuse("del: '%s' is not a device id", a) end
      ids[#ids + 1] = id
    end
  end
  local status = 0
  for _, id in ipairs(ids) do
    local ok, msg = ublk.delete(id)
    if ok then out("deleted ublk device %d", id) else err("%s", msg) status = 1 end
  end
  return status
end

function commands.decode(ublk, args)
  local kind = args[1]
  if not kind then return misuse("decode: name a kind (sqe, ctrl-cmd, dev-info, params) and the hex bytes") end
  local hex = table.concat(args, " ", 2)
  if hex == "-" then hex = io.read("a") end
  if hex == "" then return misuse("decode %s: no hex bytes given", kind) end
  local decode = require("ublk.decode")
  local valid = false
  for _, k in ipairs(decode.kinds) do valid = valid or k == kind end
  if not valid then return misuse("decode: unknown kind '%s' (sqe, ctrl-cmd, dev-info, params)", kind) end
  local t, msg = decode.decode(kind, hex, true)
  if not t then return misuse("decode %s: %s", kind, msg) end
  out("%s", decode.format(t))
  return 0
end

function commands.version(ublk)
  out("lua-ublk %s", ublk.version)
  return 0
end

--- Run the CLI with `argv` (the script's `arg`). Returns the exit status.
function M.main(argv)
  local args = {}
  local name
  local flags = { json = false, all = false, help = false, trace = false }
  for i = 1, #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then flags.help = true
    elseif a == "--json" then flags.json = true
    elseif a == "--all" then flags.all = true
    elseif a == "--trace" then flags.trace = true
    elseif a:match("^%-%-?%a") then
      return misuse("unknown option '%s'", a)
    elseif not name then name = a
    else args[#args + 1] = a end
  end
  if not name then
    if flags.help then io.stdout:write(USAGE) return 0 end
    io.stderr:write(USAGE)
    return 2
  end
  local f = commands[name]
  if not f then return misuse("unknown command '%s'", name) end
  if flags.help then io.stdout:write(HELP[name]) return 0 end
  if flags.json and name ~= "list" and name ~= "features" then return misuse("%s does not take --json", name) end
  if flags.all and name ~= "del" then return misuse("%s does not take --all", name) end
  if name == "del" and flags.all and #args > 0 then return misuse("del: give ids or --all, not both") end
  args.json, args.all = flags.json, flags.all
  local ublk = require("ublk")
  if flags.trace then ublk.trace(true) end
  local ok, status = xpcall(f, debug.traceback, ublk, args)
  if not ok then
    err("internal error: %s", status)
    return 1
  end
  return status
end

return M
