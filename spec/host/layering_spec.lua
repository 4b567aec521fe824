-- The C is layered: csrc/core (the kernel-facing code) never sees Lua, and no C file calls a file
-- that calls it back (read off the built objects' symbols: who defines what, who uses it).
local run = require("support.run")

-- Paths under dir whose name matches pattern, sorted.
local function files(dir, pattern)
  local list = {}
  local p = io.popen(("find %s -type f -name '%s' | sort"):format(dir, pattern))
  for f in p:lines() do list[#list + 1] = f end
  p:close()
  return list
end

-- A cycle in graph (node -> { node = why }), as a list of nodes (first = last), or nil.
local function find_cycle(graph)
  local state, stack = {}, {}
  local function visit(n)
    state[n] = "open"
    stack[#stack + 1] = n
    for m in pairs(graph[n] or {}) do
      if state[m] == "open" then
        local cycle, at = {}, nil
        for i, s in ipairs(stack) do if s == m then at = i end end
        for i = at, #stack do cycle[#cycle + 1] = stack[i] end
        cycle[#cycle + 1] = m
        return cycle
      elseif not state[m] then
        local c = visit(m)
        if c then return c end
      end
    end
    stack[#stack] = nil
    state[n] = "done"
  end
  local nodes = {}
  for n in pairs(graph) do nodes[#nodes + 1] = n end
  table.sort(nodes)
  for _, n in ipairs(nodes) do
    if not state[n] then
      local c = visit(n)
      if c then return c end
    end
  end
end

describe("the C's layers", function()
  it("csrc/core includes no Lua header", function()
    local sources = files("csrc/core", "*.[ch]")
    assert.is_true(#sources > 10, "only " .. #sources .. " files under csrc/core")
    for _, f in ipairs(sources) do
      local text = assert(run.slurp(f))
      for _, h in ipairs { "lua.h", "lauxlib.h", "lualib.h", "luaconf.h" } do
        assert.is_nil(text:find('#%s*include%s*[<"]' .. h:gsub("%.", "%%.") .. '[>"]'), f .. " includes " .. h)
      end
      assert.is_nil(text:find("lua_State", 1, true), f .. " names lua_State")
    end
  end)

  it("has no call cycle between C files", function()
    local objects = files("build/obj", "*.o")
    assert.is_true(#objects > 15, "build/obj holds " .. #objects .. " objects: run make first")
    local defined, used = {}, {}
    for _, o in ipairs(objects) do
      used[o] = {}
      local p = io.popen("nm " .. o)
      for line in p:lines() do
        local kind, sym = line:match("^%s*%x*%s+(%a)%s+(%S+)$")
        if kind == "U" then used[o][sym] = true elseif kind and kind:match("[TDRB]") then defined[sym] = o end
      end
      p:close()
    end
    local graph, edges = {}, 0
    for o, syms in pairs(used) do
      graph[o] = {}
      for sym in pairs(syms) do
        local at = defined[sym]
        if at and at ~= o then graph[o][at] = sym; edges = edges + 1 end
      end
    end
    assert.is_true(edges > 20, "only " .. edges .. " calls between files were found")
    local cycle = find_cycle(graph)
    assert.is_nil(cycle, cycle and ("a call cycle: " .. table.concat(cycle, " -> ")))
  end)

  it("has no include cycle between headers", function()
    local graph = {}
    for _, f in ipairs(files("csrc", "*.[ch]")) do
      local dir = f:match("^(.*)/[^/]*$")
      graph[f] = {}
      for inc in assert(run.slurp(f)):gmatch('#%s*include%s*"([^"]+)"') do
        local path = dir .. "/" .. inc
        repeat local n; path, n = path:gsub("[^/]+/%.%./", "", 1) until n == 0
        graph[f][path] = true
      end
    end
    local cycle = find_cycle(graph)
    assert.is_nil(cycle, cycle and ("an include cycle: " .. table.concat(cycle, " -> ")))
  end)

  it("finds a cycle when there is one (the check itself)", function()
    assert.are.same({ "a", "b", "a" }, find_cycle { a = { b = true }, b = { a = true } })
    assert.is_nil(find_cycle { a = { b = true }, b = { c = true } })
  end)
end)
