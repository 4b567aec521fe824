--- The `ublk` command line. Exit status: 0 on success, 1 on a failure explained on stderr, 2 on misuse.
-- @module ublk.cli
local background = require("ublk.background")

local M = {}

local USAGE = [[
usage: ublk COMMAND [ARGS]

Linux userspace block devices (ublk), from Lua.

commands:
  doctor               what the running kernel supports for ublk, and the fix where it does not
  features [--json]    the kernel's ublk features (GET_FEATURES)
  add -t TARGET ...    create a device served in the background (`ublk add --help`)
  recover ID           give a device whose server is gone a new server (`ublk recover --help`)
  upgrade ID           replace a device's live server without a failed request (`ublk upgrade --help`)
  list [--json]        every ublk device on the system
  del ID... | --all    stop their servers and delete devices
  decode KIND HEX...   read bytes as the kernel reads them (KIND: sqe, ctrl-cmd, dev-info, params)
  version              print the version

options:
  -h, --help           this text; `ublk COMMAND --help` for one command
  --trace              print every control command, decoded, to stderr (ublk add in the background:
                       those that bring the device up; later ones go to --log)
]]

local HELP = {
  doctor = [[
usage: ublk doctor

Checks the kernel version, releases known to break ADD_DEV (stable 6.18.4 and 6.18.5), the
ublk_drv module, /dev/ublk-control, kernel.io_uring_disabled and kernel.io_uring_group (may this
process use io_uring?), 128-byte SQEs and IORING_OP_URING_CMD, GET_FEATURES, legacy opcodes, the
device limits and ublks_max (what it counts, how many exist), unprivileged support and the udev
rules it needs, whether a stopped device can be started again, and whether this process shares
udev's mount namespace (so that /dev/ublkbN appears in its /dev). One line per check: ok, WARN (what
to watch, not a failure) or FAIL, then what was found and the fix.
Exit status 0 when ublk devices can be created here (warnings allowed), 1 otherwise.
]],
  features = [[
usage: ublk features [--json]

The features the kernel's ublk driver reports (GET_FEATURES), by name, with the mask.
]],
  add = [[
usage: ublk add -t null|ram|file [-f PATH] [--size SIZE] [-q QUEUES] [-d DEPTH] [--block-size N]
                [--id N] [--max-io SIZE] [--read-only] [--buffered] [--foreground] [--log FILE]
                [--recovery MODE] [--restart]

Creates a ublk device served by this program's C targets and returns once /dev/ublkbN is usable,
printing its id and path; the server goes on in the background. ublk del ID stops it.
  -t, --target     null (completes at once, reads zeros), ram (sparse memory), file (a file or
                   block device, read and written asynchronously with io_uring)
  -f, --file       file target: the backing file or block device (created sparse when missing
                   and --size is given)
  --size           bytes, or with K, M, G, T (powers of 1024); null and ram: default 1G; file:
                   defaults to the file's size
  -q, --queues     hardware queues, one server thread each (default 1)
  -d, --depth      requests in flight per queue (default 128)
  --block-size     logical block size, 512 to 4096 (file with O_DIRECT: at least the backing one)
  --id             ask for this device number
  --max-io         largest request (default 512K)
  --read-only      a read-only device
  --buffered       file: no O_DIRECT (the page cache of the backing file is used)
  --foreground     serve in this process until Ctrl-C or ublk del, then delete the device
  --log FILE       where the background server writes its messages (default: nowhere)
  --recovery MODE  the device outlives its server (`ublk recover ID` gives it a new one); while none
                   runs: requeue (requests in flight go to the next server, new ones wait),
                   fail_in_flight (those in flight fail, new ones wait), fail_io (all fail)
  --restart        a supervisor process recovers the device each time its server dies (at most 5
                   times a minute; then it logs why and leaves the device for ublk recover or del)
  --trace          print every control command, decoded, to stderr (as for every command)
Sizes: 4096, 512K, 64M, 1G.
]],
  recover = [[
usage: ublk recover ID [--log FILE] [--foreground] [--trace]

Gives device ID, made with recovery and whose server is gone, a new server, from the run record
its server left in /run/ublk, and returns once the device is live again. A C target is served by
this program in the background, as ublk add serves it; a device with Lua in its path (a handler
or hooks) has its program run again, in its directory, with UBLK_RECOVER=ID in its environment:
its first ublk.new recovers the device.
  --log FILE       where the new server writes its messages (default: nowhere)
  --foreground     C targets: serve in this process until Ctrl-C or ublk del
]],
  upgrade = [[
usage: ublk upgrade ID [--log FILE] [--foreground] [--trace]

Replaces the live server of device ID (made with recovery, on Linux 6.16 or later) with a new one,
without a failed request: the new server (this program's build of a C target, or the device's
program run again, as ublk recover does) asks the old one to hand the device over (SIGUSR1; its
dev:run() sends QUIESCE_DEV, answers what it holds and exits), then recovers it. I/O waits
meanwhile. On an older kernel it says so: kill the server and ublk recover instead.
  --log FILE       where the new server writes its messages (default: nowhere)
  --foreground     C targets: serve in this process until Ctrl-C or ublk del
]],
  list = [[
usage: ublk list [--json]

Every ublk device on the system: id, state, queues, depth, max I/O, owner, server pid, target
(for devices served by `ublk add` or a lua-ublk script), flags.
]],
  del = [[
usage: ublk del ID...
       ublk del --all

Stops each device's server (SIGTERM; it stops and deletes the device itself; a server that has
not done so within 10 s is killed) and deletes the device.
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
    out("%-4s  %-16s %s", c.level == "warn" and "WARN" or c.ok and "ok" or "FAIL", c.name, c.detail)
  end
  out("%s", r.ok and "ublk devices can be created here." or "ublk devices cannot be created here: see FAIL above.")
  return r.ok and 0 or 1
end

function commands.features(ublk, args)
  local f, msg = ublk.features()
  if not f then err("%s", msg) return 1 end
  if args.json then out("%s", json(f)) return 0 end
  local release = io.open("/proc/sys/kernel/osrelease")
  out("features 0x%x (ublk driver of Linux %s)", f.mask, release and release:read("l") or "?")
  if release then release:close() end
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
  out("%-4s %-9s %-6s %6s %6s %9s %11s %7s %-6s  %s", "ID", "STATE", "SERVER", "QUEUES", "DEPTH", "MAX_IO", "OWNER", "PID",
    "TARGET", "FLAGS")
  for _, d in ipairs(devs) do
    out("%-4d %-9s %-6s %6d %6d %9s %11s %7s %-6s  %s%s", d.id, d.state, d.server or "-", d.queues, d.depth,
      require("ublk.params").human(d.max_io), d.owner_uid .. ":" .. d.owner_gid,
      d.pid > 0 and tostring(d.pid) or "-", d.target or "-", table.concat(d.flags, ","),
      d.backing and ("  (" .. d.backing .. ")") or "")
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

-- `ublk add` options: name -> { key, kind } (kind: "value" takes the next argument, "flag" does not)
local ADD_OPTIONS = {
  ["-t"] = { "target", "value" }, ["--target"] = { "target", "value" },
  ["-f"] = { "path", "value" }, ["--file"] = { "path", "value" },
  ["--size"] = { "size", "value" },
  ["-q"] = { "queues", "value" }, ["--queues"] = { "queues", "value" },
  ["-d"] = { "depth", "value" }, ["--depth"] = { "depth", "value" },
  ["--block-size"] = { "block_size", "value" },
  ["--id"] = { "id", "value" },
  ["--max-io"] = { "max_io", "value" },
  ["--read-only"] = { "read_only", "flag" },
  ["--buffered"] = { "buffered", "flag" },
  ["--foreground"] = { "foreground", "flag" },
  ["--log"] = { "log", "value" },
  ["--trace"] = { "trace", "flag" },
  ["--recovery"] = { "recovery", "value" },
  ["--restart"] = { "restart", "flag" },
}

local function parse_add(argv, first)
  local a = {}
  local i = first
  while i <= #argv do
    local name = argv[i]
    local value
    if name:match("^%-%-[%w-]+=") then name, value = name:match("^(%-%-[%w-]+)=(.*)$") end
    local spec = ADD_OPTIONS[name]
    if not spec then return nil, ("add: unknown option '%s'"):format(argv[i]) end
    if spec[2] == "value" then
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then return nil, ("add: %s needs a value"):format(name) end
      end
      a[spec[1]] = value
    else
      a[spec[1]] = true
    end
    i = i + 1
  end
  if not a.target then return nil, "add: name a target with -t null|ram|file" end
  local opts = { target = a.target, path = a.path, size = a.size, block_size = a.block_size, max_io = a.max_io }
  for _, k in ipairs { "queues", "depth", "id" } do
    if a[k] then
      opts[k] = math.tointeger(tonumber(a[k]))
      if not opts[k] then return nil, ("add: --%s '%s' is not a whole number"):format(k, a[k]) end
    end
  end
  if a.read_only then opts.read_only = true end
  opts.recovery = a.recovery
  if a.restart and not a.recovery then
    return nil, "add: --restart needs --recovery MODE (requeue, fail_in_flight or fail_io): without recovery the device dies with its server"
  end
  if a.restart and a.foreground then return nil, "add: --restart supervises a server in the background: not with --foreground" end
  if a.buffered then opts.direct = false end
  if opts.size == nil and a.target ~= "file" then opts.size = "1G" end
  return opts, a
end

-- The flags that set each option of `ublk.new` ("-q/--queues"), for misuse messages: the user typed the flag.
local FLAG_OF = {}
for flag, o in pairs(ADD_OPTIONS) do
  local other = FLAG_OF[o[1]]
  FLAG_OF[o[1]] = not other and flag or #flag < #other and flag .. "/" .. other or other .. "/" .. flag
end

-- "ublk.new: block_size = 3: must be ..." as "add: --block-size 3: must be ..."
local function as_flag_misuse(msg)
  msg = tostring(msg):gsub("^ublk%.new: ", "")
  local key, value, rule = msg:match("^([%w_]+) = (.-): (.*)$")
  if not (key and FLAG_OF[key]) then return "add: " .. msg end
  return ("add: %s%s: %s"):format(FLAG_OF[key], value == "nil" and "" or " " .. value, rule)
end

-- A server's two steps around `make()` (ublk.new or ublk.recover): bring_up() makes the device and
-- starts it; serve(dev) serves until it is stopped. SIGINT/SIGTERM/SIGHUP from bring_up on are read
-- by run(), even when they come while it starts (`ublk del` may signal the server once START_DEV has
-- published its pid).
local function server_steps(ublk, make)
  local core = ublk.core
  local early
  local function bring_up()
    early = core.catch_signals { core.SIGINT, core.SIGTERM, core.SIGHUP, core.SIGUSR1 }
    local dev, msg = make()
    if not dev then early:close() return nil, msg end
    local started, smsg = dev:start()
    if not started then dev:delete() early:close() return nil, smsg end
    return dev
  end
  local function serve(dev)
    local done, reason = dev:run(early)
    if done and reason == "handed over" then return true, ("ublk device %d: handed over to the next server"):format(dev.id), true end
    return done, done and ("ublk device %d: stopped (%s) and deleted"):format(dev.id, reason) or reason
  end
  return bring_up, serve
end

-- --foreground: serve in this process.
local function in_foreground(ublk, bring_up, serve, announce)
  local dev, msg = bring_up()
  if not dev then err("%s", msg) return 1 end
  out("%s", announce(dev, ublk.core.getpid()))
  io.stdout:flush()
  local done, what = serve(dev)
  if not done then err("%s", what) return 1 end
  out("%s", what)
  return 0
end

-- `ublk add`/`ublk recover` in the parent: print what the background server reported; the status.
local function report_of(report, pid, status)
  if not report then err("%s", pid) return 1 end -- pipe or fork failed: nothing was created
  local kind, text, traces = background.parse(report, pid, status)
  io.stderr:write(traces)
  if kind == "ready" then out("%s", text) return 0 end
  err("%s", text)
  return 1
end

-- The background server: bring the device up, tell the parent once live (or why not), and serve it
-- until it is stopped. Its stderr is the log (or nowhere), so with --trace and no --log the trace of
-- bringing the device up goes to the parent, which prints it on its own stderr; what comes later
-- goes to the log.
local function serve_in_background(ublk, a, fd, bring_up, announce, serve)
  local core = ublk.core
  local held = {}
  if a.trace and not a.log then
    ublk.trace(true, { write = function(self, ...)
      for i = 1, select("#", ...) do held[#held + 1] = tostring((select(i, ...))) end
      return self
    end, flush = function() end })
  end
  local function tell(text)
    local lines = {}
    for l in table.concat(held):gmatch("[^\n]+") do lines[#lines + 1] = "trace " .. l .. "\n" end
    core.notify(fd, table.concat(lines) .. text)
    if a.trace then ublk.trace(true) end
  end
  local xok, dev, msg = xpcall(bring_up, debug.traceback)
  if not xok then dev, msg = nil, "internal error: " .. tostring(dev) end
  if not dev then
    tell("error " .. tostring(msg) .. "\n")
    os.exit(1)
  end
  tell("ready " .. announce(dev, core.getpid()) .. "\n")
  local done, what, handed = serve(dev)
  io.stderr:write(what, "\n")
  os.exit(handed and background.HANDED_OVER or done and 0 or 1)
end

function commands.add(ublk, opts, a)
  -- misuse and a backing store that cannot be used are told here, before anything goes to the
  -- background; what the kernel lacks too (its features), from a control handle closed before the fork
  local control = require("ublk.control")
  if control.get() and not a.foreground then control.release() end
  local ok, checked, why = pcall(ublk.check, opts)
  if not ok then err("%s", as_flag_misuse(checked)) return 2 end
  if not checked then err("%s", why) return 1 end
  local function announce(dev, pid)
    return ("ublk device %d: %s (target %s, server pid %d)"):format(dev.id, dev.path, opts.target, pid)
  end
  local bring_up, serve = server_steps(ublk, function() return ublk.new(opts) end)
  if a.foreground then return in_foreground(ublk, bring_up, serve, announce) end
  if a.restart then
    local again = {} -- what a new server is given: the device's options are the kernel's
    for k, v in pairs(opts) do if k ~= "id" then again[k] = v end end
    return report_of(background.fork(a.log, function(fd)
      background.supervise(fd, a.log, function(pfd) serve_in_background(ublk, a, pfd, bring_up, announce, serve) end,
        function(pfd, id)
          local up, on = server_steps(ublk, function() return ublk.recover(id, again) end)
          serve_in_background(ublk, a, pfd, up, announce, on)
        end)
    end))
  end
  return report_of(background.fork(a.log, function(fd) serve_in_background(ublk, a, fd, bring_up, announce, serve) end))
end

function commands.recover(ublk, id, a)
  local core = ublk.core
  local verb = a.take_over and "upgrade" or "recover"
  local make = a.take_over and ublk.take_over or ublk.recover
  local records = require("ublk.records")
  if not core.exists("/sys/class/ublk-char/ublkc" .. id) then err("%s: there is no ublk device %d", verb, id) return 1 end
  local r = records.read(id)
  if not r then
    err("%s: device %d has no run record in %s (its server wrote none: it ran without root, or with another "
      .. "UBLK_RUN_DIR): give it a new server from a program, with ublk.%s(%d, opts)", verb, id, records.dir(),
      a.take_over and "take_over" or "recover", id)
    return 1
  end
  if r.argv then
    -- a device with Lua in its path: its program runs again, and its first ublk.new recovers the device.
    -- The record says what to run: only one that nobody else could have written is followed.
    local uid, mode = core.owner(records.path(id))
    if uid ~= core.geteuid() or (mode or 0) & 0x12 ~= 0 then
      err("%s: the run record %s is not this user's alone (owner %s, mode %s): its command line is not run",
        verb, records.path(id), tostring(uid), mode and ("%o"):format(mode) or "?")
      return 1
    end
    if a.foreground then
      return misuse("%s: device %d was served by a program (%s): run it again yourself with UBLK_RECOVER=%d%s to serve it in the foreground",
        verb, id, table.concat(r.argv, " "), id, a.take_over and " UBLK_TAKE_OVER=1" or "")
    end
    return report_of(background.fork(a.log, function(fd)
      local env = { UBLK_RECOVER = tostring(id), UBLK_REPORT_FD = tostring(fd), UBLK_TAKE_OVER = a.take_over and "1" or nil }
      for k, v in pairs(r.env or {}) do env[k] = v end
      local _, msg = core.exec(r.argv, env, fd, r.cwd)
      core.notify(fd, ("error " .. verb .. ": cannot run the program that served device %d (%s in %s): %s\n"):format(
        id, table.concat(r.argv, " "), r.cwd, msg))
      os.exit(1)
    end))
  end
  local opts = { target = r.target, path = r.path, direct = r.direct, offset = r.offset }
  local function announce(dev, pid)
    return ("ublk device %d: %s (%s, target %s, server pid %d)"):format(dev.id, dev.path,
      a.take_over and "taken over" or "recovered", r.target, pid)
  end
  local bring_up, serve = server_steps(ublk, function() return make(id, opts) end)
  if a.foreground then return in_foreground(ublk, bring_up, serve, announce) end
  return report_of(background.fork(a.log, function(fd) serve_in_background(ublk, a, fd, bring_up, announce, serve) end))
end

function commands.decode(_, args)
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
  if argv[1] == "add" or (argv[1] == "--trace" and argv[2] == "add") then
    local first = argv[1] == "add" and 2 or 3
    for i = first, #argv do
      if argv[i] == "-h" or argv[i] == "--help" then io.stdout:write(HELP.add) return 0 end
    end
    local opts, a = parse_add(argv, first)
    if not opts then return misuse("%s", a) end
    local ublk = require("ublk")
    a.trace = a.trace or first == 3
    if a.trace then ublk.trace(true) end
    local ok, status = xpcall(commands.add, debug.traceback, ublk, opts, a)
    if not ok then err("internal error: %s", status) return 1 end
    return status
  end
  local verb = argv[argv[1] == "--trace" and 2 or 1]
  if verb == "recover" or verb == "upgrade" then
    local a = { trace = argv[1] == "--trace", take_over = verb == "upgrade" }
    local i = a.trace and 3 or 2
    while i <= #argv do
      local v = argv[i]
      if v == "-h" or v == "--help" then io.stdout:write(HELP[verb]) return 0
      elseif v == "--foreground" then a.foreground = true
      elseif v == "--trace" then a.trace = true
      elseif v == "--log" then
        i = i + 1
        a.log = argv[i]
        if not a.log then return misuse("%s: --log needs a file", verb) end
      elseif v:match("^%-%-log=") then a.log = v:sub(7)
      elseif v:match("^%-") then return misuse("%s: unknown option '%s'", verb, v)
      elseif a.id then return misuse("%s: one device id, not '%s' as well", verb, v)
      else
        a.id = math.tointeger(tonumber(v))
        if not a.id or a.id < 0 then return misuse("%s: '%s' is not a device id", verb, v) end
      end
      i = i + 1
    end
    if not a.id then return misuse("%s: name the device id", verb) end
    local ublk = require("ublk")
    if a.trace then ublk.trace(true) end
    local ok, status = xpcall(commands.recover, debug.traceback, ublk, a.id, a)
    if not ok then err("internal error: %s", status) return 1 end
    return status
  end
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
