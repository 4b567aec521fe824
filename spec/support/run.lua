-- Run a command; return its exit status, stdout and stderr.
local M = {}

--- The environment of a command that is not ours: without the sanitizer runtime the specs preload.
M.PLAIN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS"

--- Where specs put their scratch files.
M.TMP = os.getenv("TMPDIR") or "/tmp"

--- A file's contents, or nil when it cannot be read.
function M.slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- s quoted for sh.
function M.quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- `LUA_CPATH='...'` for the specs' build of ublk.core (UBLK_SPEC_CPATH), or "" when none is set.
function M.cpath_env()
  local cpath = os.getenv("UBLK_SPEC_CPATH")
  return cpath and ("LUA_CPATH='%s;;'"):format(cpath) or ""
end

--- `env LUA_PATH=... LUA_CPATH=...`: this checkout's Lua modules and the specs' build of ublk.core.
function M.ours_env()
  return "env LUA_PATH='lua/?.lua;lua/?/init.lua;;' " .. M.cpath_env()
end

function M.run(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local _, how, code = os.execute(("(%s) </dev/null >%s 2>%s"):format(cmd, out, err))
  local o, e = M.slurp(out) or "", M.slurp(err) or ""
  os.remove(out); os.remove(err)
  if how == "exit" then return code, o, e end
  return 128 + (code or 0), o, e
end

--- The `ublk` command of this checkout, with the build the specs use.
function M.ublk(args)
  local cpath = os.getenv("UBLK_SPEC_CPATH")
  return M.run((cpath and ("UBLK_CPATH='%s' "):format(cpath) or "") .. "lua5.4 bin/ublk " .. args)
end

--- A command that is not ours (luarocks, gcc).
function M.plain(cmd)
  return M.run(M.PLAIN_ENV .. " sh -c " .. M.quote(cmd))
end

return M
