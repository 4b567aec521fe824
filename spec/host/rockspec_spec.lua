-- The rock builds and installs offline with luarocks, and works from the tree it was installed in:
-- from a checkout (luarocks make), and as the release (make rock: a .src.rock, installed as a file
-- and from a local server).
local run = require("support.run")

-- A fresh directory under TMP, removed by the spec's teardown.
local function scratch(name)
  local dir = ("%s/rock-%s-%d"):format(run.TMP, name, math.random(1 << 30))
  assert.are.equal(0, (run.plain("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "'")))
  return dir
end

local version = dofile("lua/ublk/version.lua")

-- What a tree the rock was installed into gives: require("ublk") from it alone, its `ublk`
-- command, and `ublk doctor` (which runs here, with no ublk driver, and says so).
local function works_from(tree)
  local script = 'local u = require("ublk") print(u.version, package.searchpath("ublk.core", package.cpath))'
  local code, out, err = run.plain(("cd / && LUA_PATH='%s/share/lua/5.4/?.lua' LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e %s")
    :format(tree, tree, run.quote(script)))
  assert.are.equal(0, code, err)
  assert.matches("^" .. version:gsub("%p", "%%%0") .. "\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5%.4/ublk/core%.so", out)
  code, out, err = run.plain(("cd / && %s/bin/ublk decode dev-info %s"):format(tree, string.rep("00", 64)))
  assert.are.equal(0, code, err)
  assert.matches("struct ublksrv_ctrl_dev_info %(64 bytes%)", out)
  code, out, err = run.plain(("cd / && %s/bin/ublk version"):format(tree))
  assert.are.equal(0, code, err)
  assert.are.equal("lua-ublk " .. version .. "\n", out)
  code, out, err = run.plain(("cd / && %s/bin/ublk doctor"):format(tree))
  assert.is_true(code == 0 or code == 1, err)
  assert.matches("\n?%a+%s+kernel%s+Linux ", out)
  assert.matches("ublk devices can%s?n?o?t? be created here", out)
end

describe("rockspec", function()
  local dirs = {}
  teardown(function() for _, d in ipairs(dirs) do run.plain("rm -rf '" .. d .. "'") end end)
  local function tmp(name) local d = scratch(name); dirs[#dirs + 1] = d; return d end

  it("lists every C source and every Lua module of the checkout", function()
    local p = io.popen("ls csrc/core/*.c csrc/core/targets/*.c csrc/lua/*.c lua/ublk.lua lua/ublk/*.lua")
    local paths = {}
    for path in p:lines() do paths[#paths + 1] = path end
    p:close()
    assert.is_true(#paths > 20, "only " .. #paths .. " files listed") -- the listing itself worked
    for _, file in ipairs { "rockspec/ublk-scm-1.rockspec", ("rockspec/ublk-%s-1.rockspec"):format(version) } do
      local spec = assert(run.slurp(file), file)
      for _, path in ipairs(paths) do
        assert(spec:find('"' .. path .. '"', 1, true), path .. " is missing from " .. file)
      end
    end
  end)

  it("of the release is the scm one with ublk.version and the release tarball (make rockspec)", function()
    local code, made, err = run.plain(("lua5.4 tools/rockspec %s < rockspec/ublk-scm-1.rockspec"):format(version))
    assert.are.equal(0, code, err)
    assert.are.equal(made, run.slurp(("rockspec/ublk-%s-1.rockspec"):format(version)),
      "the committed release rockspec is not what `make rockspec` makes: run it")
    assert.matches('\nversion = "' .. version:gsub("%p", "%%%0") .. '%-1"\n', made)
    assert.matches('url = "ublk%-' .. version:gsub("%p", "%%%0") .. '%.tar%.gz"', made)
    assert.are.equal(version, require("ublk").version)
  end)

  it("builds and installs with luarocks --lua-version=5.4 make, offline", function()
    local tree = tmp("make")
    local code, out, err = run.plain(("luarocks --lua-version=5.4 make rockspec/ublk-scm-1.rockspec --tree=%s"):format(tree))
    assert.are.equal(0, code, out .. err)
    assert.matches("ublk scm%-1 is now installed", out)
    works_from(tree)
  end)

  it("packs the release (make rock), which installs offline from the file and from a local server", function()
    local code, out, err = run.plain("make --no-print-directory rock")
    assert.are.equal(0, code, out .. err)
    local rock = ("dist/ublk-%s-1.src.rock"):format(version)
    code, out = run.plain("unzip -l " .. rock)
    assert.are.equal(0, code, out)
    assert.matches(("ublk%%-%s%%-1%%.rockspec"):format(version:gsub("%p", "%%%0")), out)
    assert.matches(("ublk%%-%s%%.tar%%.gz"):format(version:gsub("%p", "%%%0")), out)

    local tree = tmp("file")
    code, out, err = run.plain(("luarocks --lua-version=5.4 install %s --tree=%s"):format(rock, tree))
    assert.are.equal(0, code, out .. err)
    assert.matches(("ublk %s%%-1 is now installed"):format(version:gsub("%p", "%%%0")), out)
    works_from(tree)

    local server, tree2 = tmp("server"), tmp("served")
    code, out, err = run.plain(("cp %s rockspec/ublk-%s-1.rockspec %s/"):format(rock, version, server))
    assert.are.equal(0, code, out .. err)
    code, out, err = run.plain(("luarocks-admin --lua-version=5.4 make-manifest %s"):format(server))
    assert.are.equal(0, code, out .. err)
    code, out, err = run.plain(("luarocks --lua-version=5.4 install --only-server=%s ublk --tree=%s"):format(server, tree2))
    assert.are.equal(0, code, out .. err)
    works_from(tree2)
  end)

  it("without liburing's header, stops at luarocks' external-dependency check, before any compiler", function()
    assert.are.equal(0, (run.plain("make --no-print-directory rock")))
    local empty, tree = tmp("empty"), tmp("nouring")
    local code, out, err = run.plain(("luarocks --lua-version=5.4 install dist/ublk-%s-1.src.rock --tree=%s LIBURING_INCDIR=%s")
      :format(version, tree, empty))
    assert.are_not.equal(0, code)
    assert.matches("Could not find header file for LIBURING", err)
    assert.matches("No file liburing%.h in " .. empty:gsub("%p", "%%%0"), err)
    assert.is_nil((out .. err):find("gcc", 1, true), out .. err)
    assert.is_nil((out .. err):find("error:", 1, true), out .. err)
  end)
end)
