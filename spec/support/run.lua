-- Run a command; return its exit status, stdout and stderr.
local M = {}

local function slurp(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

function M.run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute(("(%s) </dev/null >%s 2>%s"):format(cmd, out, err))
  local o, e = slurp(out), slurp(err)
  os.remove(out); os.remove(err)
  if how == "exit" then return code, o, e end
  return 128 + (code or 0), o, e
end

--- The `ublk` command of this checkout, with the build the specs use.
function M.ublk(args)
  local cpath = os.getenv("UBLK_SPEC_CPATH")
  local env = cpath and ("LUA_CPATH='%s;;' "):format(cpath) or ""
  return M.run(env .. "lua5.4 bin/ublk " .. args)
end

--- A command that is not ours (luarocks, gcc): without the sanitizer runtime the specs preload.
function M.plain(cmd)
  return M.run("env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS sh -c '" .. cmd:gsub("'", "'\\''") .. "'")
end

return M
