-- The rock builds and installs offline with luarocks, and works from the tree it was installed in.
local run = require("support.run")

describe("rockspec", function()
  local tree = os.tmpname()
  os.remove(tree)
  teardown(function() os.execute("rm -rf '" .. tree .. "'") end)

  it("lists every C source and every Lua module of the checkout", function()
    local spec = assert(run.slurp("rockspec/ublk-scm-1.rockspec"))
    local p = io.popen("ls csrc/core/*.c csrc/core/targets/*.c csrc/lua/*.c lua/ublk.lua lua/ublk/*.lua")
    local n = 0
    for path in p:lines() do
      assert(spec:find('"' .. path .. '"', 1, true), path .. " is missing from the rockspec")
      n = n + 1
    end
    p:close()
    assert.is_true(n > 20, "only " .. n .. " files listed") -- the listing itself worked
  end)

  it("builds and installs with luarocks --lua-version=5.4 make, offline", function()
    local code, out, err = run.plain(("luarocks --lua-version=5.4 make rockspec/ublk-scm-1.rockspec --tree=%s"):format(tree))
    assert.are.equal(0, code, out .. err)
    assert.matches("ublk scm%-1 is now installed", out)
  end)

  it("require('ublk') works from that tree alone", function()
    local code, out, err = run.plain(("cd / && lua5.4 -e 'package.path=\"%s/share/lua/5.4/?.lua\" package.cpath=\"%s/lib/lua/5.4/?.so\" local u=require(\"ublk\") print(u.version, package.searchpath(\"ublk.core\", package.cpath))'"):format(tree, tree))
    assert.are.equal(0, code, err)
    assert.matches("^%d+%.%d+%.%d+\t" .. tree:gsub("%p", "%%%0") .. "/lib/lua/5%.4/ublk/core%.so", out)
  end)

  it("installs the ublk command", function()
    local code, out, err = run.plain(("cd / && %s/bin/ublk decode dev-info %s"):format(tree, string.rep("00", 64)))
    assert.are.equal(0, code, err)
    assert.matches("struct ublksrv_ctrl_dev_info %(64 bytes%)", out)
  end)
end)
