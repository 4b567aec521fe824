-- tools/bench.d/report.lua: the aim lines the issue notes quote, from a made-up run (no VM, no fio).
local run = require("support.run")
local json = require("dkjson")

-- A report directory as tools/bench.d/guest leaves it: meta.txt and one fio JSON per round, with
-- the IOPS of 4 KiB random writes per device and round.
local function fixture(iops_by_device)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. run.quote(dir .. "/fio")))
  local names, rounds = {}, 0
  for name, xs in pairs(iops_by_device) do
    names[#names + 1] = name
    rounds = math.max(rounds, #xs)
  end
  table.sort(names)
  local meta = assert(io.open(dir .. "/meta.txt", "w"))
  meta:write("kernel\t7.3\nrelease\t7.3.0-test\nrounds\t", rounds, "\nruntime\t2\nramp\t1\nsize\t512M\n",
             "lua_size\t128M\nonly\tlua\ndevices\t", table.concat(names, ","), "\ncases\trandwrite-4k-qd32\n")
  meta:close()
  for r = 1, rounds do
    local jobs = {}
    for _, name in ipairs(names) do
      local iops = iops_by_device[name][r]
      jobs[#jobs + 1] = { jobname = name, error = 0, write = { iops = iops, io_bytes = iops * 4096 * 2,
        bw_bytes = iops * 4096, clat_ns = { mean = 2e6, percentile = { ["50.000000"] = 2e6, ["99.000000"] = 5e6 } } } }
    end
    local f = assert(io.open(("%s/fio/randwrite-4k-qd32-r%d.json"):format(dir, r), "w"))
    f:write(json.encode({ jobs = jobs }))
    f:close()
  end
  return dir
end

local function report(dir)
  local code, out, err = run.run(("lua5.4 tools/bench.d/report.lua report %s %s/out.json"):format(run.quote(dir), run.quote(dir)))
  local doc = json.decode(run.slurp(dir .. "/out.json") or "null")
  os.execute("rm -rf " .. run.quote(dir))
  return code, out, err, doc
end

local function aim_line(out, start)
  for line in out:gmatch("[^\n]+") do
    if line:find(start, 1, true) == 1 then return line end
  end
end

describe("bench report", function()
  local lua_ram_aim = "aim: the Lua RAM disk >= 3 x nbdkit-lua"

  it("says what 3 x nbdkit-lua is against ublk-null, by medians and round by round", function()
    local code, out, err, doc = report(fixture {
      null_blk = { 20000, 21000, 19000 }, ["ublk-file"] = { 12000, 12000, 12000 },
      ["file-hook"] = { 9000, 6000, 8000 }, ["nbdkit-lua"] = { 4000, 3000, 5000 },
      ["lua-ram"] = { 9000, 12000, 10000 }, ["ublk-null"] = { 10000, 20000, 15000 },
    })
    assert.are.equal(0, code, err)
    -- medians: lua-ram 10000, nbdkit-lua 4000, ublk-null 15000; rounds: 2.25, 4.00, 2.00; 3 x nbdkit-lua
    -- is 12000, 9000, 15000 against ublk-null's 10000, 20000, 15000 (above it in the first only)
    assert.are.equal(lua_ram_aim .. " at depth 32 with two queues: randwrite 4k qd32 2.50x (not met, 1 of 3 rounds"
      .. " at 3.0x or more, 2.00 to 4.00); 3 x nbdkit-lua is 12.0k IOPS, 0.80x ublk-null's 15.0k (above it in 1 of 3"
      .. " rounds), lua-ram 0.67x ublk-null", aim_line(out, lua_ram_aim))
    assert.matches("^aim: a pass%-through write hook keeps >= 0.6 x the plain file target's IOPS: randwrite 4k qd32 0.67x %(met, 2 of 3 rounds",
      aim_line(out, "aim: a pass-through"))
    local aim = doc.aims[1]
    assert.are.equal("lua-ram", aim.device)
    assert.are.equal("ublk-null", aim.ceiling)
    assert.are.equal(0.8, aim.asked_over_ceiling)
    assert.are.equal(1, aim.rounds_asked_above_ceiling)
    assert.are.same({ 2.25, 4, 2 }, aim.round_ratios)
    assert.is_false(aim.met)
  end)

  it("leaves the ceiling out when ublk-null did not run", function()
    local code, out, err, doc = report(fixture {
      ["nbdkit-lua"] = { 4000, 3000, 5000 }, ["lua-ram"] = { 13000, 12000, 16000 },
    })
    assert.are.equal(0, code, err)
    assert.are.equal(lua_ram_aim .. " at depth 32 with two queues: randwrite 4k qd32 3.25x (met, 3 of 3 rounds"
      .. " at 3.0x or more, 3.20 to 4.00)", aim_line(out, lua_ram_aim))
    assert.is_nil(doc.aims[1].ceiling)
    assert.is_nil(doc.aims[1].asked_over_ceiling)
  end)
end)

-- The device list lives in report.lua alone: `report.lua devices` gives each device's setup, and
-- tools/bench --help prints it; every device the scripts set up or check for is in it.
describe("bench device list", function()
  local function devices()
    local code, out, err = run.run("lua5.4 tools/bench.d/report.lua devices all")
    assert.are.equal(0, code, err)
    local list, by = {}, {}
    for line in out:gmatch("[^\n]+") do
      local f = {}
      for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
      local d = { name = f[1], kind = f[2], peer = f[3], group = f[4], also = f[5], setup = f[6], fields = #f }
      list[#list + 1], by[d.name] = d, d
    end
    return list, by
  end
  local function squash(s) return (s:gsub("%s+", " ")) end

  it("gives every device its kind, group, peer, also and setup", function()
    local list, by = devices()
    assert.is_true(#list > 0)
    for _, d in ipairs(list) do
      assert.are.equal(6, d.fields, d.name)
      assert.matches("^[%w_%-]+$", d.name)
      assert.is_truthy(d.kind == "peer" or d.kind == "ublk", d.name)
      assert.is_truthy(d.group == "base" or d.group == "lua", d.name)
      for _, other in ipairs({ d.peer, d.also }) do
        assert.is_truthy(other == "-" or by[other], d.name .. " names " .. other)
      end
      -- a line of setup, not a placeholder (print writes a missing one as "nil")
      assert.is_truthy(d.setup and #d.setup >= 20 and d.setup ~= "nil" and d.setup:match("%a%a"), d.name)
    end
  end)

  it("has every device tools/bench and its guest set up or check for", function()
    local _, by = devices()
    for _, script in ipairs({ "tools/bench", "tools/bench.d/guest" }) do
      local n = 0
      for name in run.slurp(script):gmatch("%f[%w]has (%a[%w_%-]*)%s*[;&|]") do   -- has NAME && ...
        n = n + 1
        assert.is_truthy(by[name], script .. " sets up " .. name .. ", which report.lua devices does not list")
      end
      assert.is_true(n > 0, script)
    end
  end)

  it("is what tools/bench --help shows: every device with its setup, every case", function()
    local code, out, err = run.run("tools/bench --help")
    assert.are.equal(0, code, err)
    local help = squash(out)
    for _, d in ipairs((devices())) do
      assert.is_truthy(out:find("\n  " .. d.name .. " ", 1, true), d.name .. " has no line in tools/bench --help")
      assert.is_truthy(help:find(squash(d.setup), 1, true), d.name .. "'s setup is not in tools/bench --help")
    end
    local _, cases = run.run("lua5.4 tools/bench.d/report.lua cases")
    for name in cases:gmatch("([^\t\n]+)[^\n]*") do
      assert.is_truthy(out:find("\n  " .. name .. " ", 1, true), "case " .. name)
    end
  end)
end)
