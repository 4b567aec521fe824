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
