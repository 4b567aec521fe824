--- Run records: what a running server writes under /run/ublk/ID ($UBLK_RUN_DIR) for `ublk list`
-- to show beside the kernel's view (the target, the backing file), with the server's pid, so a
-- record left by a server that is gone is told apart from its device's new server's.
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

--- Write the record of device `id`, served by this process: `target` and, where it has one, the
-- backing `path`. Without the rights to (not root), nothing is written: `ublk list` shows less.
function M.write(id, target, path)
  local dir = M.dir()
  -- mkdir -p, without a shell (see core.mkdir)
  local at = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    at = at .. "/" .. part
    core.mkdir(at)
  end
  local f = io.open(M.path(id), "w")
  if not f then return end
  f:write(("target=%s\npid=%d\n"):format(target, core.getpid()))
  if path then f:write(("path=%s\n"):format(path)) end
  f:close()
end

--- The record of device `id` as a table of its keys (target, pid, path), or nil when there is none.
function M.read(id)
  local f = io.open(M.path(id))
  if not f then return nil end
  local r = {}
  for line in f:lines() do
    local k, v = line:match("^(%w+)=(.*)$")
    if k then r[k] = v end
  end
  f:close()
  return r
end

--- Remove the record of device `id` (nothing when there is none).
function M.remove(id)
  os.remove(M.path(id))
end

return M
