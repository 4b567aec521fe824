-- The API reference (make doc: LDoc over the Lua modules and the C request methods) documents every
-- public function, doc/api.md every option, and headless Chromium renders the function lists.
local run = require("support.run")

-- The anchors LDoc wrote into a module's page: the names it documented.
local function documented(module)
  local html = assert(run.slurp(("build/doc/modules/%s.html"):format(module)), "no page for " .. module)
  local names = {}
  for name in html:gmatch('<a name%s*=%s*"([^"]+)"') do names[name] = true end
  return names, html
end

-- Public names a Lua source defines: `function M.x`, `M.x = ...` (top level), `function Class:x`,
-- `Class.x = ...`, as "x" or "Class:x"; names starting with "_" are not public.
local function defined_in(path, class)
  local names = {}
  for line in assert(io.open(path)):lines() do
    local n = line:match("^function M%.([%a][%w_]*)") or line:match("^M%.([%a][%w_]*)%s*=")
    if n then names[#names + 1] = n end
    if class then
      n = line:match("^function " .. class .. ":([%a][%w_]*)") or line:match("^" .. class .. "%.([%a][%w_]*)%s*=")
      if n then names[#names + 1] = class .. ":" .. n end
    end
  end
  return names
end

describe("the API reference", function()
  setup(function()
    local code, out, err = run.plain("make --no-print-directory doc")
    assert.are.equal(0, code, out .. err)
  end)

  it("is built by make doc into build/doc/index.html, with a page per module", function()
    local index = assert(run.slurp("build/doc/index.html"))
    for _, m in ipairs { "ublk", "ublk.device", "ublk.request", "ublk.control" } do
      assert.matches('href="modules/' .. m:gsub("%p", "%%%0") .. '%.html"', index)
    end
    assert.matches('href="topics/api%.md%.html"', index)
  end)

  it("documents every public function of require('ublk')", function()
    local names = documented("ublk")
    local n = 0
    for k, v in pairs(require("ublk")) do
      if type(v) == "function" and not k:match("^_") then
        assert.is_true(names[k] ~= nil, "ublk." .. k .. " has no doc comment")
        n = n + 1
      end
    end
    assert.is_true(n >= 12, "only " .. n .. " functions in ublk")
  end)

  it("documents every public function and method of ublk.device and ublk.control", function()
    for module, source in pairs { ["ublk.device"] = "lua/ublk/device.lua", ["ublk.control"] = "lua/ublk/control.lua" } do
      local names = documented(module)
      local public = defined_in(source, "Device")
      assert.is_true(#public >= 6, "only " .. #public .. " public names found in " .. source)
      for _, name in ipairs(public) do
        assert.is_true(names[name] ~= nil, module .. ": " .. name .. " has no doc comment")
      end
    end
  end)

  it("documents every method of a request and of its buffer (C functions)", function()
    local names = documented("ublk.request")
    require("ublk")
    local mt = debug.getregistry()["ublk.request"]
    local _, methods = debug.getupvalue(mt.__index, 2)
    local n = 0
    for k in pairs(methods) do
      assert.is_true(names["req:" .. k] ~= nil or names["buf:" .. k] ~= nil, "req:" .. k .. " has no doc comment")
      n = n + 1
    end
    assert.is_true(n >= 6, "only " .. n .. " request methods")
  end)

  it("has every option of ublk.new in doc/api.md", function()
    local api = assert(run.slurp("doc/api.md"))
    local n = 0
    for _, list in ipairs { require("ublk.params").keys, require("ublk.targets").keys } do
      for _, k in ipairs(list) do
        assert.is_truthy(api:find("`" .. k[1] .. "`", 1, true), k[1] .. " is not in doc/api.md")
        n = n + 1
      end
    end
    assert.is_true(n > 30, "only " .. n .. " options")
  end)

  it("renders in headless Chromium, with the function list", function()
    local dir = run.TMP .. "/doc-chromium-" .. math.random(1 << 30)
    local page = ("file://%s/build/doc/modules/ublk.html"):format(os.getenv("PWD"))
    local flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
      .. "--disable-component-update --disable-sync --user-data-dir=" .. dir
    local code, dom, err = run.plain(("chromium %s --dump-dom %s"):format(flags, page))
    assert.are.equal(0, code, err)
    -- the rendered page holds the function list: a link and an entry for each function
    for _, name in ipairs { "new", "check", "list", "delete", "features", "decode", "doctor" } do
      assert.matches('<a href="#' .. name .. '">' .. name .. "%(", dom)
      assert.matches('<a name="' .. name .. '"></a>', dom)
    end
    local shot
    code, shot, err = run.plain(("cd %s && chromium %s --window-size=1024,2048 --screenshot %s"):format(run.TMP, flags, page))
    assert.are.equal(0, code, shot .. err)
    local png = assert(run.slurp(run.TMP .. "/screenshot.png"), "no screenshot")
    assert.are.equal("\137PNG", png:sub(1, 4))
    assert.is_true(#png > 20000, "a blank page? the screenshot is " .. #png .. " bytes")
    os.remove(run.TMP .. "/screenshot.png")
    run.plain("rm -rf '" .. dir .. "'")
  end)
end)
