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

-- The stall case: a report directory with the files tools/bench.d/stall leaves in stall/ (run
-- records, fio's JSON, fio's per-I/O latency logs), made up. The I/Os around each event are inline
-- log text; the 1 ms I/Os around them are generated, as a p99 needs more than 100 values to differ
-- from the largest.
local T0 = 1700000000000 -- ms since the epoch, as fio's log_unix_epoch writes them

-- fio latency log lines, "completion ms, latency ns, direction, block size, offset", for rows of
-- { completion ms after T0, latency ms }
local function log_lines(rows)
  local lines = {}
  for _, r in ipairs(rows) do lines[#lines + 1] = ("%d, %d, 1, 4096, 0\n"):format(T0 + r[1], math.floor(r[2] * 1e6 + 0.5)) end
  return table.concat(lines)
end

-- Away from every event: the run's first I/O, 1 ms I/Os, four of 2 ms and one of 9 ms (so that the
-- baseline's p99 is neither its largest nor its median).
local function baseline_rows()
  local rows = { { 1, 1 } }
  for t = 10, 1000, 10 do rows[#rows + 1] = { t, 1 } end
  for _, t in ipairs({ 1200, 1300, 1400, 1500 }) do rows[#rows + 1] = { t, 2 } end
  rows[#rows + 1] = { 1600, 9 }
  for t = 6000, 6490, 10 do rows[#rows + 1] = { t, 1 } end
  return rows
end

-- 1 ms I/Os completing every 10 ms over each span { from, to } (ms after T0)
local function filler_rows(spans)
  local rows = {}
  for _, span in ipairs(spans) do
    for t = span[1], span[2], 10 do rows[#rows + 1] = { t, 1 } end
  end
  return rows
end

-- One run's files: its record (the event from event to done, ms after T0), its log (the inline
-- text, the baseline and the filler) and fio's JSON (errors; fio's longest latency in ns, by
-- default the log's).
local function write_run(sdir, one)
  local base = ("%s/%s-r%d"):format(sdir, one.event, one.round)
  local log = one.text .. log_lines(baseline_rows()) .. log_lines(filler_rows(one.filler))
  local n, max = 0, 0
  for lat in log:gmatch("%d+, (%d+), 1, 4096, 0\n") do n, max = n + 1, math.max(max, tonumber(lat)) end
  local f = assert(io.open(base .. ".lat.log", "w"))
  f:write(log)
  f:close()
  f = assert(io.open(base .. ".txt", "w"))
  f:write(("device\t0\nold_pid\t100\nsupervisor\t101\nevent_ms\t%.3f\ndone_ms\t%.3f\nafter\tstate live, server alive, pid 102\n"
    .. "new_pid\t102\n"):format(T0 + one.event_ms, T0 + one.done_ms))
  f:close()
  f = assert(io.open(base .. ".json", "w"))
  f:write(json.encode({ jobs = { { jobname = "stall", error = 0, total_err = one.errors or 0, first_error = one.errors and 5 or 0,
    write = { total_ios = n, io_bytes = n * 4096, lat_ns = { max = one.json_max_ns or max } } } } }))
  f:close()
end

local function stall_fixture(kernel, runs, info)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. run.quote(dir .. "/stall")))
  local rounds = 0
  for _, r in ipairs(runs) do rounds = math.max(rounds, r.round) end
  local meta = assert(io.open(dir .. "/meta.txt", "w"))
  meta:write("kernel\t", kernel, "\nrelease\t", kernel, ".0-test\nrounds\t", rounds, "\nruntime\t2\nramp\t1\nsize\t512M\n",
             "only\tall\ndevices\t\ncases\tstall\n")
  meta:close()
  local f = assert(io.open(dir .. "/stall/info.txt", "w"))
  f:write("setup\tublk add -t file ...\nfio\trw=randwrite bs=4k iodepth=4\n", info or "")
  f:close()
  for _, r in ipairs(runs) do write_run(dir .. "/stall", r) end
  return dir
end

-- A SIGKILL at 3000 ms: four I/Os in flight wait for the new server, the longest `longest` ms. Each
-- inline line is "completion ms since the epoch, latency ns, ...".
local function sigkill_run(round, text)
  return { event = "sigkill", round = round, event_ms = 3000, done_ms = 3000.2, text = text,
           filler = { { 2000, 2990 }, { 3500, 4000 } } }
end
local SIGKILL_R1 = [[
1700000001999, 1000000, 1, 4096, 0
1700000003411, 412000000, 1, 4096, 0
1700000003411, 396000000, 1, 4096, 0
1700000003412, 380000000, 1, 4096, 0
1700000003412, 350000000, 1, 4096, 0
1700000004002, 1000000, 1, 4096, 0
]]
local SIGKILL_R2 = [[
1700000003389, 390000000, 1, 4096, 0
1700000003389, 374000000, 1, 4096, 0
1700000003390, 358000000, 1, 4096, 0
1700000003390, 328000000, 1, 4096, 0
]]
local SIGKILL_R3 = [[
1700000003449, 450000000, 1, 4096, 0
1700000003449, 434000000, 1, 4096, 0
1700000003450, 418000000, 1, 4096, 0
1700000003450, 388000000, 1, 4096, 0
]]
-- ublk upgrade from 3000 to 4500 ms: the hand-over holds four I/Os that began at 4400 ms, later than
-- 1 s after the command's start but within 1 s of its return, so still around the event.
local UPGRADE = [[
1700000004002, 1000000, 1, 4096, 0
1700000004550, 150000000, 1, 4096, 0
1700000004540, 140000000, 1, 4096, 0
1700000004530, 130000000, 1, 4096, 0
1700000004520, 120000000, 1, 4096, 0
1700000005502, 1000000, 1, 4096, 0
]]
local function upgrade_run(round)
  return { event = "upgrade", round = round, event_ms = 3000, done_ms = 4500, text = UPGRADE,
           filler = { { 2000, 2990 }, { 4600, 5500 } } }
end

local function stall_line(out, event)
  for line in out:gmatch("[^\n]+") do
    if line:find("stall: " .. event, 1, true) == 1 then return line end
  end
end

describe("bench report: the stall case", function()
  it("gives the longest I/O, the p99 around the event and away from it, medians over the rounds", function()
    local code, out, err, doc = report(stall_fixture("7.3", {
      sigkill_run(1, SIGKILL_R1), upgrade_run(1), sigkill_run(2, SIGKILL_R2), upgrade_run(2),
      sigkill_run(3, SIGKILL_R3), upgrade_run(3),
    }))
    assert.are.equal(0, code, err .. out)
    -- around the SIGKILL: 151 I/Os of 1 ms and the four held, so the p99 (the 154th of 155) is the
    -- second longest; away from it: 154 of 1 ms, four of 2 and one of 9, so the 157th of 158 is 2 ms
    assert.are.equal("stall: SIGKILL + --restart recovery: longest I/O 412 ms, p99 around the event 396 ms"
      .. " (baseline p99 2.0 ms), 0 errors; median of 3 rounds, longest 390 to 450 ms", stall_line(out, "SIGKILL"))
    assert.are.equal("stall: live hand-over (ublk upgrade): longest I/O 150 ms, p99 around the event 140 ms"
      .. " (baseline p99 2.0 ms), 0 errors; median of 3 rounds, longest 150 to 150 ms; ublk upgrade returned after 1.50 s",
      stall_line(out, "live hand-over"))
    assert.is_nil(out:find("\nerrors:", 1, true), out)
    local kill, up = doc.stall.events[1], doc.stall.events[2]
    assert.are.equal("sigkill", kill.event)
    assert.are.same({ longest_ms = 412, p99_around_ms = 396, p99_baseline_ms = 2, done_s = kill.median.done_s }, kill.median)
    local r1 = kill.runs[1]
    assert.are.equal(155, r1.around_ios)
    assert.are.equal(158, r1.baseline_ios)
    assert.are.equal(313, r1.ios)
    assert.are.equal(-1, r1.longest_start_ms)   -- it began 1 ms before the kill
    assert.are.equal(3, r1.event_at_s)          -- the log's first I/O began at T0
    assert.are.equal(390, kill.longest_min_ms)
    assert.are.equal(450, kill.longest_max_ms)
    assert.are.equal(0, kill.errors)
    assert.are.equal(140, up.median.p99_around_ms)
    assert.are.equal(2, up.median.p99_baseline_ms)
    assert.are.equal(1.5, up.median.done_s)
    assert.are.equal(1400, up.runs[1].longest_start_ms)
    assert.are.equal(196, up.runs[1].around_ios)
  end)

  it("says that 6.12 lacks QUIESCE, and counts fio's I/O errors as errors", function()
    local refusal = "upgrade.unsupported\tublk.take_over: device 0 has no UBLK_F_QUIESCE, which a live hand-over needs"
      .. " (the running kernel's ublk driver lacks it; Linux 6.16 brings it): ...\n"
    local failed = sigkill_run(1, SIGKILL_R1)
    failed.errors = 2
    local code, out, _, doc = report(stall_fixture("6.12", { failed }, refusal))
    assert.are.equal(1, code, out)
    assert.matches("^stall: SIGKILL %+ %-%-restart recovery: longest I/O 412 ms, .*, 2 errors; 1 round$", stall_line(out, "SIGKILL"))
    assert.are.equal("stall: live hand-over (ublk upgrade): not measured: Linux 6.12 lacks QUIESCE (UBLK_F_QUIESCE, Linux"
      .. " 6.16+), so ublk upgrade refuses a hand-over there", stall_line(out, "live hand-over"))
    assert.are.same({ "stall sigkill round 1: 2 I/O errors (first errno 5): requeue fails none" }, doc.errors)
    assert.matches("UBLK_F_QUIESCE", doc.stall.events[2].unsupported)
    assert.are.same({}, doc.stall.events[2].runs)
  end)

  it("is an error when the log is not fio's account: another longest latency, or a refusal on 7.3", function()
    local off = sigkill_run(1, SIGKILL_R1)
    off.json_max_ns = 412000   -- the log read as microseconds
    local code, out, _, doc = report(stall_fixture("7.3", { off },
      "upgrade.unsupported\tublk.take_over: device 0 has no UBLK_F_QUIESCE ... driver lacks it\n"))
    assert.are.equal(1, code, out)
    assert.are.same({ "stall sigkill round 1: the latency log's longest I/O is 412 ms, fio's 0.4 ms",
                      "stall upgrade: refused on Linux 7.3: ublk.take_over: device 0 has no UBLK_F_QUIESCE ... driver lacks it" },
      doc.errors)
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
