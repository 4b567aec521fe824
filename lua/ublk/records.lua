--- Run records: what a running server writes under /run/ublk/ID ($UBLK_RUN_DIR) for `ublk list`
-- to show beside the kernel's view (the target, the backing file), with the server's pid, so a
-- record left by a server that is gone is told apart from its device's new server's; and what
-- `ublk recover` needs to make a new server: the C target's options, or for a device with Lua in its
-- path the program's command line and directory.
-- @module ublk.records
local core = require("ublk.core")

local M = {}

--- The directory records are kept in.
function M.dir()
  return os.getenv("UBLK_RUN_DIR") or "/run/ublk"
end

--- The record's path for device `id`.
function M.path(id)
  return ("%s/%d"):format(M.dir(), id)
end

-- An argument as one word: bytes outside a plain set as %XX.
local function encode(arg)
  if arg == "" then return "%" end
  return (arg:gsub("[^%w/._=,:+@-]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function decode(word)
  if word == "%" then return "" end
  return (word:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- This process's command line, from /proc/self/cmdline.
local function command_line()
  local f = io.open("/proc/self/cmdline", "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local argv = {}
  for arg in text:gmatch("([^%z]*)%z") do argv[#argv + 1] = encode(arg) end
  return table.concat(argv, " ")
end

--- Write the record of device `id`, served by this process: `fields` has `target` and, where they
-- apply, the backing `path`, `direct`, `offset` and the `recovery` mode; `program = true` (a device
-- with Lua in its path) adds this process's command line and directory, which `ublk recover` runs
-- again (with its LUA_PATH and LUA_CPATH). Without the rights to (not root), nothing is written:
-- `ublk list` shows less.
function M.write(id, fields)
  local dir = M.dir()
  -- mkdir -p, without a shell (see core.mkdir)
  local at = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    at = at .. "/" .. part
    core.mkdir(at)
  end
  local f = io.open(M.path(id), "w")
  if not f then return end
  f:write(("target=%s\npid=%d\n"):format(fields.target, core.getpid()))
  for _, k in ipairs { "path", "direct", "offset", "recovery" } do
    if fields[k] ~= nil then f:write(("%s=%s\n"):format(k, tostring(fields[k]))) end
  end
  if fields.program then
    f:write(("argv=%s\ncwd=%s\n"):format(command_line() or "", encode(core.getcwd() or "/")))
    for _, k in ipairs { "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4" } do
      local v = os.getenv(k)
      if v then f:write(("env.%s=%s\n"):format(k, encode(v))) end
    end
  end
  f:close()
end

--- The record of device `id` as a table of its keys (target, pid, path, direct, offset, recovery,
-- argv as a list, cwd, env: the Lua path variables), or nil when there is none.
function M.read(id)
  local f = io.open(M.path(id))
  if not f then return nil end
  local r = {}
  for line in f:lines() do
    local k, v = line:match("^([%w_.]+)=(.*)$")
    local var = k and k:match("^env%.(.+)$")
    if var then
      r.env = r.env or {}
      r.env[var] = decode(v)
    elseif k then
      r[k] = v
    end
  end
  f:close()
  if r.argv then
    local argv = {}
    for word in r.argv:gmatch("%S+") do argv[#argv + 1] = decode(word) end
    r.argv = argv
  end
  if r.cwd then r.cwd = decode(r.cwd) end
  if r.direct then r.direct = r.direct == "true" end
  if r.offset then r.offset = math.tointeger(tonumber(r.offset)) end
  return r
end

--- Remove the record of device `id` (nothing when there is none).
function M.remove(id)
  os.remove(M.path(id))
end

return M
