-- tools/bench's Lua half: the one list of cases, devices, --only sets and aims (tools/bench --help
-- prints it: `report.lua help`), a progress line per fio run (in the VM), and the medians, ratios,
-- table and JSON (on the host, from the folder the VM left behind).
--
--   lua5.4 tools/bench.d/report.lua help                   the cases, devices, --only sets and aims, as text
--   lua5.4 tools/bench.d/report.lua cases [ONLY]           one line per case: name rw bs iodepth
--                                                          (ONLY: the cases that set runs by default)
--   lua5.4 tools/bench.d/report.lua devices [ONLY]         one line per device: name kind peer group also setup
--                                                          (ONLY: all, base, peers, ublk or lua: those that run)
--   lua5.4 tools/bench.d/report.lua check FIO_JSON         every job's error, or nothing; exit 1 on any
--   lua5.4 tools/bench.d/report.lua progress FIO_JSON CASE "null_blk 68.1k  brd 63.0k ..." (exit 1 on errors)
--   lua5.4 tools/bench.d/report.lua stall-settings         the stall case's fio job and timing, one line:
--                                                          rw bs iodepth runtime event_at size events
--   lua5.4 tools/bench.d/report.lua stall-run SDIR EVENT R one stall run's figures from the stall case's folder
--                                                          (DIR/stall), one line (exit 1 on errors)
--   lua5.4 tools/bench.d/report.lua report DIR OUT_JSON    table on stdout, OUT_JSON written
local json -- dkjson, required below for check, progress and report only (help needs no module)

-- The cases, in the order they run and print. metric: what the table shows and the ratios compare;
-- latency: the case is there for its completion latency (the clat columns) too.
local CASES = {
  { name = "randread-4k-qd32",  label = "randread 4k qd32",  rw = "randread",  bs = "4k",   iodepth = 32, metric = "iops" },
  { name = "randwrite-4k-qd32", label = "randwrite 4k qd32", rw = "randwrite", bs = "4k",   iodepth = 32, metric = "iops" },
  { name = "randread-4k-qd1",   label = "randread 4k qd1",   rw = "randread",  bs = "4k",   iodepth = 1,  metric = "iops", latency = true },
  { name = "read-128k-qd32",    label = "seq read 128k qd32", rw = "read",     bs = "128k", iodepth = 32, metric = "mb_s" },
  -- not a device case: it runs on a device of its own (STALL below), after the others
  { name = "stall",             label = "stall",             rw = "randwrite", bs = "4k",   iodepth = 4,  metric = "stall" },
}

-- The stall case: how long a client's I/O waits across an event on its device's server. Each round
-- runs every event once, each on a new device (tools/bench.d/stall), with fio logging every I/O's
-- latency; the event comes event_at s after the device's first I/O. "Around the event": the I/Os in
-- flight at some moment from window_s before the event to window_s after it (the kill; ublk upgrade
-- from its start to its return); the baseline: every other I/O of the run.
local STALL = {
  runtime = 8, event_at = 3, window_s = 1, size = "256M",
  setup = "$UBLK add -t file -f /tmp/bench/stall/stall.img --size 256M -q 1 --recovery requeue --restart --log"
       .. " LOG, a new sparse image on the VM's tmpfs for every run; fio randwrite bs=4k iodepth=4 for 8 s"
       .. " (time_based, direct, io_uring, clocksource=clock_gettime, continue_on_error=all) with a latency log of every I/O"
       .. " (write_lat_log, log_avg_msec=0, log_unix_epoch=1)",
  events = {
    { name = "sigkill", label = "SIGKILL + --restart recovery",
      text = "kill -9 of the server; the supervisor of ublk add --restart gives the device"
          .. " a new server (START/END_USER_RECOVERY), and the requests the dead one held go to it (requeue)" },
    { name = "upgrade", label = "live hand-over (ublk upgrade)",
      text = "ublk upgrade N: the old server quiesces the device (QUIESCE_DEV) and exits, the"
          .. " new one recovers it; Linux 6.16 or later (7.3 here; 6.12 lacks UBLK_F_QUIESCE and says so)" },
  },
}

-- The devices, in table order (and the order of each round); what tools/bench --help lists and
-- tools/bench.d/guest sets up (its setup[...] strings say what it set up in a run). kind: peer (no
-- ublk device) or ublk. group: base (the set before the Lua comparisons were added) or lua (the Lua
-- comparisons). peer: what a device is compared with ("vs peer"); also: a second comparison, for
-- context ("also vs"). setup: how tools/bench.d/guest sets it up (SIZE: --size, LUA_SIZE: --lua-size).
local DEVICES = {
  { name = "null_blk",   kind = "peer", group = "base",
    setup = "configfs nullb0: memory_backed=0 submit_queues=1 hw_queue_depth=128 blocksize=4096 poll_queues=0"
         .. " irqmode=0 (completion in the submitter's context), queue_mode=2 (blk-mq), max_sectors=1024"
         .. " (512 KiB, ublk's default max_io: null_blk's own 124 KiB splits 128 KiB reads)" },
  { name = "ublk-null",  kind = "ublk", group = "base", peer = "null_blk", also = "nbdkit",
    setup = "$UBLK add -t null --size SIZE -q 1 -d 128: our C null target" },
  { name = "brd",        kind = "peer", group = "base",
    setup = "/dev/ram0: brd reloaded as rd_nr=2 rd_size=SIZE (rd_size cannot change while loaded); filled first" },
  { name = "ublk-ram",   kind = "ublk", group = "base", peer = "brd", also = "nbdkit",
    setup = "$UBLK add -t ram --size SIZE -q 1 -d 128: our C RAM target; filled first" },
  { name = "loop",       kind = "peer", group = "base",
    setup = "losetup --direct-io=on on /dev/ram1 (brd's second device, filled first)" },
  { name = "ublk-file",  kind = "ublk", group = "base", peer = "loop", also = "nbdkit",
    setup = "$UBLK add -t file -f /dev/ram1 -q 1 -d 128: our C file target, on the same brd device as loop" },
  { name = "file-hook",  kind = "ublk", group = "lua",  peer = "ublk-file",
    setup = "lua5.4 tools/bench.d/hooked-file.lua /dev/ram1 1 128: the file target on the same brd device"
         .. " with a pass-through Lua write hook (ublk.new{ target = \"file\", hooks = ... }; the hook sees"
         .. " writes only)" },
  { name = "nbdkit",     kind = "peer", group = "base", peer = "null_blk",
    setup = "nbdkit memory SIZE on a Unix socket, nbd-client -unix SOCK /dev/nbd0 -b 4096 -C 1 (netlink:"
         .. " the nbd module, loaded with nbds_max=0, creates nbd0 on connect); filled first" },
  { name = "nbdkit-lua", kind = "peer", group = "lua",  peer = "null_blk",
    setup = "nbdkit lua tools/bench.d/ramdisk-nbdkit.lua size=LUA_SIZE on a Unix socket, nbd-client -unix SOCK"
         .. " /dev/nbd1 -b 4096 -C 1: the Lua RAM disk's logic as an nbdkit Lua plugin; filled first" },
  { name = "lua-ram",    kind = "ublk", group = "lua",  peer = "nbdkit-lua", also = "null_blk",
    setup = "lua5.4 examples/ramdisk.lua LUA_SIZE 2 64: the Lua RAM disk served by Lua through ublk, TWO"
         .. " hardware queues of depth 64 (Lua holds every 4 KiB block as a string); filled first" },
}

-- --only: which devices run, in the order --help lists them. stall: the set runs the stall case when
-- --cases does not name the cases.
local ONLY = {
  { name = "all", text = "every device and the stall case (the default)", want = function() return true end, stall = true },
  { name = "base", text = "everything but the Lua comparisons (the set before they were added)",
    want = function(d) return d.group == "base" end },
  { name = "peers", text = "the devices of kind peer (never the stall case: it needs ublk add)",
    want = function(d) return d.kind == "peer" end },
  { name = "ublk", text = "our devices (kind ublk) and the stall case", want = function(d) return d.kind == "ublk" end,
    stall = true },
  { name = "lua", text = "the Lua comparisons with what they are compared with (ublk-file for file-hook),"
      .. " null_blk for context and ublk-null as the ceiling of the lua-ram aim",
    want = function(d)
      return d.group == "lua" or d.name == "ublk-file" or d.name == "null_blk" or d.name == "ublk-null"
    end },
}
for _, o in ipairs(ONLY) do ONLY[o.name] = o end

-- The aims the Lua comparisons are measured against (printed under the table when both ran).
-- ceiling: a device that shows what the aim asks for in absolute terms; why: what it stands for.
local AIMS = {
  { device = "lua-ram", peer = "nbdkit-lua", at_least = 3, iodepth = 32, ceiling = "ublk-null",
    text = "the Lua RAM disk >= 3 x nbdkit-lua at depth 32 with two queues",
    why = "one server thread like the Lua RAM disk's, and no work at all on the data, so no ublk server in"
       .. " this VM is likely to do better; where the aim asks for more than it did, it asks more of Lua"
       .. " than ublk gave a server that does nothing" },
  { device = "file-hook", peer = "ublk-file", at_least = 0.6, iodepth = 32, rw = "randwrite",
    text = "a pass-through write hook keeps >= 0.6 x the plain file target's IOPS" },
}

local function die(msg)
  io.stderr:write("bench: ", msg, "\n")
  os.exit(1)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function load_fio(path)
  local text, err = read_file(path)
  if not text then return nil, err end
  -- fio may print notes ("fio: ...") before its JSON document when --output is not used
  local start = text:find("{", 1, true)
  if not start then return nil, path .. ": no JSON in fio's output" end
  local doc, _, perr = json.decode(text, start)
  if not doc then return nil, path .. ": " .. tostring(perr) end
  return doc
end

-- One fio job's numbers, for the direction its case measures.
local function job_numbers(job)
  local dir = (job.write and (job.write.io_bytes or 0) > 0) and "write" or "read"
  local d = job[dir] or {}
  local clat = d.clat_ns or {}
  local pct = clat.percentile or {}
  return {
    iops = d.iops,
    mb_s = d.bw_bytes and d.bw_bytes / 1e6,
    clat_mean_us = clat.mean and clat.mean / 1000,
    clat_p50_us = pct["50.000000"] and pct["50.000000"] / 1000,
    clat_p99_us = pct["99.000000"] and pct["99.000000"] / 1000,
    io_bytes = d.io_bytes,
    error = job.error,
  }
end

local function case_by_name(name)
  for _, c in ipairs(CASES) do if c.name == name then return c end end
end

local function job_error(job)
  local n = job_numbers(job)
  if (job.error or 0) ~= 0 then return ("error %d"):format(job.error) end
  if not n.io_bytes or n.io_bytes == 0 then return "no I/O completed" end
  return nil
end

local function si(x)
  if x == nil then return "-" end
  if x >= 1e6 then return ("%.2fM"):format(x / 1e6) end
  if x >= 1e4 then return ("%.1fk"):format(x / 1e3) end
  if x >= 100 then return ("%.0f"):format(x) end
  return ("%.1f"):format(x)
end

-- the JSON key of a result's second ratio: vs_nbdkit, vs_null_blk
local function also_key(res) return "vs_" .. res.also:gsub("%W", "_") end

local function median(xs)
  local t = {}
  for _, x in ipairs(xs) do if x then t[#t + 1] = x end end
  if #t == 0 then return nil end
  table.sort(t)
  local m = #t // 2
  if #t % 2 == 1 then return t[m + 1] end
  return (t[m] + t[m + 1]) / 2
end

-- fio's per-I/O latency log (write_lat_log, log_avg_msec=0, log_unix_epoch=1): one line per I/O,
-- "completion time (ms since the epoch), latency (ns), direction, block size, ...".
local function parse_lat_log(text)
  local ios = {}
  for line in text:gmatch("[^\n]+") do
    local t, lat = line:match("^%s*(%d+),%s*(%d+),")
    if t then ios[#ios + 1] = { t = tonumber(t), lat = tonumber(lat) } end
  end
  return ios
end

-- The p-th percentile by nearest rank: the smallest value with at least p % of the values at or below it.
local function percentile(sorted, p)
  if #sorted == 0 then return nil end
  return sorted[math.max(1, (p * #sorted + 99) // 100)]
end

-- One stall run's figures from its I/Os and the event: from event_ms to done_ms (ms since the epoch,
-- as the log's: the kill, or ublk upgrade from its start to its return). An I/O is around the event
-- when it was in flight at some moment from window_ms before the event to window_ms after it.
local function stall_figures(ios, event_ms, done_ms, window_ms)
  local around, baseline, longest, longest_start, first_start = {}, {}, nil, nil, nil
  for _, x in ipairs(ios) do
    local start = x.t - x.lat / 1e6
    if not first_start or start < first_start then first_start = start end
    if start <= done_ms + window_ms and x.t >= event_ms - window_ms then
      around[#around + 1] = x.lat
    else
      baseline[#baseline + 1] = x.lat
    end
    if not longest or x.lat > longest then longest, longest_start = x.lat, start end
  end
  table.sort(around)
  table.sort(baseline)
  local function ms(ns) return ns and ns / 1e6 end
  return { ios = #ios, longest_ms = ms(longest), longest_start_ms = longest_start and longest_start - event_ms,
           p99_around_ms = ms(percentile(around, 99)), around_ios = #around,
           p99_baseline_ms = ms(percentile(baseline, 99)), baseline_ios = #baseline,
           event_at_s = first_start and (event_ms - first_start) / 1000 }
end

-- milliseconds as the stall lines print them: 412, 3.5, 0.9, 0.05
local function fmt_ms(x)
  if not x then return "-" end
  if x >= 10 then return ("%.0f"):format(x) end
  if x >= 0.1 then return ("%.1f"):format(x) end
  return ("%.2f"):format(x)
end

local function event_by_name(name)
  for _, e in ipairs(STALL.events) do if e.name == name then return e end end
end

local cmd = arg[1]

-- text in lines of at most width characters: the first after first, the others after indent
local function wrap(text, first, indent, width)
  local lines, line, empty = {}, first, true
  for word in text:gmatch("%S+") do
    if not empty and #line + 1 + #word > width then
      lines[#lines + 1], line, empty = line, indent, true
    end
    line, empty = line .. (empty and "" or " ") .. word, false
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

-- `help`: the lists above as text, for tools/bench --help.
local function help()
  local W, indent = 100, (" "):rep(14)
  print("Cases, in the order they run (--cases NAME,... picks some):")
  for _, c in ipairs(CASES) do
    if c.metric == "stall" then
      print(wrap(("rw=%s bs=%s iodepth=%d, %d s per run on a device of its own: how long I/O stalls across each"
        .. " event below (one line per event under the table)"):format(c.rw, c.bs, c.iodepth, STALL.runtime),
        ("  %-18s "):format(c.name), (" "):rep(21), W))
    else
      print(("  %-18s rw=%s bs=%s iodepth=%d: %s%s"):format(c.name, c.rw, c.bs, c.iodepth,
        c.metric == "mb_s" and "MB/s" or "IOPS", c.latency and ", with mean and p50 completion latency" or ""))
    end
  end
  print("The stall case (--cases stall alone runs it without the other devices):")
  print(wrap(STALL.setup .. ". Each round runs each event once, on a new device, " .. STALL.event_at
    .. " s after the device's first completed I/O; the line gives medians over"
    .. " the rounds of the longest I/O's latency (the stall), the p99 of the I/Os in flight within "
    .. STALL.window_s .. " s of the event, the p99 of every other I/O (the baseline), and fio's I/O errors"
    .. " (summed; requeue fails none, so any is an error).", "  ", "  ", W))
  for _, e in ipairs(STALL.events) do
    print(wrap(e.label .. ": " .. e.text, ("  %-11s "):format(e.name), indent, W))
  end
  print("Devices, in table order (one hardware queue each unless said; scheduler none on blk-mq devices):")
  for _, d in ipairs(DEVICES) do
    local vs = d.peer and ("  vs " .. d.peer .. (d.also and (", also vs " .. d.also) or "")) or ""
    print(("  %-11s %-4s  %-4s%s"):format(d.name, d.kind, d.group, vs))
    print(wrap(d.setup, indent, indent, W))
  end
  print("--only SET: which devices run:")
  for _, o in ipairs(ONLY) do
    local names = {}
    for _, d in ipairs(DEVICES) do if o.want(d) then names[#names + 1] = d.name end end
    print(wrap(o.text .. ": " .. table.concat(names, " "), ("  %-11s "):format(o.name), indent, W))
  end
  print("Aims of the Lua comparisons (under the table when both sides ran):")
  for _, a in ipairs(AIMS) do
    print(wrap(("%s vs %s: %s%s"):format(a.device, a.peer, a.text, a.ceiling and ("; ceiling " .. a.ceiling .. ": " .. a.why) or ""),
      "  ", "    ", W))
  end
end

if cmd == "help" then
  help()
  os.exit(0)
elseif cmd == "cases" then
  local only = arg[2] and (ONLY[arg[2]] or die("--only " .. arg[2] .. ": expected all, base, peers, ublk or lua"))
  for _, c in ipairs(CASES) do
    if not only or c.metric ~= "stall" or only.stall then print(c.name, c.rw, c.bs, c.iodepth) end
  end
  os.exit(0)
elseif cmd == "stall-settings" then
  local c, names = case_by_name("stall"), {}
  for _, e in ipairs(STALL.events) do names[#names + 1] = e.name end
  print(c.rw, c.bs, c.iodepth, STALL.runtime, STALL.event_at, STALL.size, table.concat(names, ","))
  os.exit(0)
elseif cmd == "devices" then
  local only = arg[2] or "all"
  local want = (ONLY[only] or die("--only " .. only .. ": expected all, base, peers, ublk or lua")).want
  for _, d in ipairs(DEVICES) do
    if want(d) then print(d.name, d.kind, d.peer or "-", d.group, d.also or "-", d.setup) end
  end
  os.exit(0)
end
json = require("dkjson")

-- key<TAB>value lines: the table, and the values of the key `error` in order
local function read_record(text)
  local rec, errs = {}, {}
  for line in (text or ""):gmatch("[^\n]+") do
    local k, v = line:match("^([^\t]+)\t(.*)$")
    if k == "error" then errs[#errs + 1] = v elseif k then rec[k] = v end
  end
  return rec, errs
end

-- One stall run as tools/bench.d/stall left it in its folder: EVENT-rROUND.txt (the event's time,
-- the servers' pids, what went wrong), .json (fio's) and .lat.log. Returns the run and its errors.
local function stall_run(sdir, event, round)
  local base = ("%s/%s-r%d"):format(sdir, event, round)
  local what = ("stall %s round %d: "):format(event, round)
  local text = read_file(base .. ".txt")
  if not text then return nil, { what .. "no run record (" .. base .. ".txt)" } end
  local rec, errs = read_record(text)
  local run = { round = round, old_pid = tonumber(rec.old_pid), new_pid = tonumber(rec.new_pid), after = rec.after }
  local event_ms = tonumber(rec.event_ms)
  local done_ms = tonumber(rec.done_ms) or event_ms
  local log = read_file(base .. ".lat.log")
  local ios = parse_lat_log(log or "")
  if not event_ms then
    errs[#errs + 1] = "no event time in the run record"
  elseif not log then
    errs[#errs + 1] = "no latency log"
  elseif #ios == 0 then
    errs[#errs + 1] = "fio logged no I/O"
  else
    for k, v in pairs(stall_figures(ios, event_ms, done_ms, STALL.window_s * 1000)) do run[k] = v end
    -- the event came event_at s after fio's first completed I/O: a log that says less has times
    -- that cannot be set against the event's
    if run.event_at_s < STALL.event_at - 0.05 then
      errs[#errs + 1] = ("the event came %.2f s after the log's first I/O began, not %d s or more: the log's times and"
        .. " the event's disagree"):format(run.event_at_s, STALL.event_at)
    end
  end
  run.done_s = event_ms and done_ms and (done_ms - event_ms) / 1000
  local doc, ferr = load_fio(base .. ".json")
  local job = doc and doc.jobs and doc.jobs[1]
  if not job then
    errs[#errs + 1] = "no fio result (" .. tostring(ferr or "no job") .. ")"
  else
    -- continue_on_error=all: fio counts the I/O errors (total_err) and goes on
    run.errors = job.total_err or ((job.error or 0) ~= 0 and 1 or 0)
    if run.errors > 0 then
      errs[#errs + 1] = ("%d I/O error%s (first errno %d): requeue fails none"):format(run.errors,
        run.errors == 1 and "" or "s", job.first_error or job.error or 0)
    end
    -- the log must be fio's own account: every I/O in it, the same longest latency
    local d = job.write and (job.write.total_ios or 0) > 0 and job.write or job.read or {}
    if #ios > 0 and d.total_ios and d.total_ios ~= #ios then
      errs[#errs + 1] = ("the latency log has %d I/Os, fio counted %d"):format(#ios, d.total_ios)
    end
    local max = d.lat_ns and d.lat_ns.max
    if run.longest_ms and max and math.abs(max / 1e6 - run.longest_ms) > 1e-6 then
      errs[#errs + 1] = ("the latency log's longest I/O is %s ms, fio's %s ms"):format(fmt_ms(run.longest_ms), fmt_ms(max / 1e6))
    end
  end
  for i, e in ipairs(errs) do errs[i] = what .. e end
  return run, errs
end

-- A stall run's progress line.
local function stall_run_line(run)
  return ("longest I/O %s ms (began %+.0f ms from the event), p99 around it %s ms over %d I/Os, baseline p99 %s ms over %d,"
    .. " %d errors%s"):format(fmt_ms(run.longest_ms), run.longest_start_ms or 0, fmt_ms(run.p99_around_ms), run.around_ios or 0,
    fmt_ms(run.p99_baseline_ms), run.baseline_ios or 0, run.errors or 0,
    run.done_s and run.done_s >= 0.01 and (", command returned after %.2f s"):format(run.done_s) or "")
end

-- An event over the rounds: medians, the range of the longest I/O, fio's errors summed, and the line.
local function stall_event(sdir, e, rounds, info, kernel)
  local res, errs = { event = e.name, label = e.label, text = e.text, runs = {} }, {}
  local refused = info[e.name .. ".unsupported"]
  if refused then
    res.unsupported = refused
    if refused:find("UBLK_F_QUIESCE", 1, true) and refused:find("driver lacks it", 1, true) then
      res.line = ("stall: %s: not measured: Linux %s lacks QUIESCE (UBLK_F_QUIESCE, Linux 6.16+), so ublk upgrade"
        .. " refuses a hand-over there"):format(e.label, kernel or "?")
    else
      res.line = ("stall: %s: not measured: ublk upgrade refused it: %s"):format(e.label, refused)
    end
    -- only 6.12 lacks it among the kernels the bench boots
    if kernel ~= "6.12" then errs[#errs + 1] = ("stall %s: refused on Linux %s: %s"):format(e.name, kernel or "?", refused) end
    return res, errs
  end
  for r = 1, rounds do
    local run, rerrs = stall_run(sdir, e.name, r)
    for _, x in ipairs(rerrs) do errs[#errs + 1] = x end
    if run then res.runs[#res.runs + 1] = run end
  end
  local med, errors, lo, hi = {}, 0, math.huge, -math.huge
  for _, k in ipairs({ "longest_ms", "p99_around_ms", "p99_baseline_ms", "done_s" }) do
    local xs = {}
    for _, run in ipairs(res.runs) do xs[#xs + 1] = run[k] end
    med[k] = median(xs)
  end
  local measured = 0
  for _, run in ipairs(res.runs) do
    errors = errors + (run.errors or 0)
    if run.longest_ms then
      measured = measured + 1
      lo, hi = math.min(lo, run.longest_ms), math.max(hi, run.longest_ms)
    end
  end
  res.median, res.errors, res.rounds = med, errors, measured
  if measured == 0 then
    res.line = ("stall: %s: no result (see the errors)"):format(e.label)
    return res, errs
  end
  res.longest_min_ms, res.longest_max_ms = lo, hi
  res.line = ("stall: %s: longest I/O %s ms, p99 around the event %s ms (baseline p99 %s ms), %d error%s; %s"):format(
    e.label, fmt_ms(med.longest_ms), fmt_ms(med.p99_around_ms), fmt_ms(med.p99_baseline_ms), errors, errors == 1 and "" or "s",
    measured == 1 and "1 round" or ("median of %d rounds, longest %s to %s ms"):format(measured, fmt_ms(lo), fmt_ms(hi)))
  if e.name == "upgrade" and med.done_s then res.line = res.line .. ("; ublk upgrade returned after %.2f s"):format(med.done_s) end
  return res, errs
end

if cmd == "stall-run" then
  local sdir, event, round = arg[2], arg[3], math.tointeger(tonumber(arg[4] or ""))
  if not (sdir and event_by_name(event or "") and round) then die("usage: report.lua stall-run SDIR EVENT ROUND") end
  local run, errs = stall_run(sdir, event, round)
  if run and run.longest_ms then print(stall_run_line(run)) end
  for _, e in ipairs(errs) do print(e) end
  os.exit(#errs == 0 and 0 or 1)
end
if cmd == "check" or cmd == "progress" then
  local doc, err = load_fio(arg[2] or die("usage: report.lua " .. cmd .. " FIO_JSON"))
  if not doc then die(err) end
  local parts, bad = {}, 0
  for _, job in ipairs(doc.jobs or {}) do
    local e = job_error(job)
    if e then
      bad = bad + 1
      parts[#parts + 1] = job.jobname .. " FAILED (" .. e .. ")"
    elseif cmd == "progress" then
      local n = job_numbers(job)
      local c = case_by_name(arg[3] or "")
      parts[#parts + 1] = job.jobname .. " " .. ((c and c.metric == "mb_s") and (si(n.mb_s) .. " MB/s") or si(n.iops))
    end
  end
  if #(doc.jobs or {}) == 0 then bad = 1; parts[1] = "fio ran no job" end
  if #parts > 0 then print(table.concat(parts, "  ")) end
  os.exit(bad == 0 and 0 or 1)
elseif cmd ~= "report" then
  die("usage: report.lua help|cases [ONLY]|devices [ONLY]|stall-settings|stall-run SDIR EVENT ROUND|check FIO_JSON"
    .. "|progress FIO_JSON|report DIR OUT_JSON")
end

-- report DIR OUT_JSON
local dir, out_path = arg[2], arg[3]
if not dir or not out_path then die("usage: report.lua report DIR OUT_JSON") end

local meta, meta_order = {}, {}
do
  local text = read_file(dir .. "/meta.txt") or die(dir .. "/meta.txt is missing: the VM run ended early")
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^([^\t]+)\t(.*)$")
    if k then
      if meta[k] == nil then meta_order[#meta_order + 1] = k end
      meta[k] = v
    end
  end
end
do -- written by tools/bench on the host: what else ran on this machine meanwhile
  local host = read_file(dir .. "/host.txt")
  if host and host:match("%S") then
    meta.host = host:gsub("%s+$", "")
    meta_order[#meta_order + 1] = "host"
  end
end
local rounds = tonumber(meta.rounds) or 0
local measured = {}
for name in (meta.devices or ""):gmatch("[^,]+") do measured[name] = true end
local case_names = {}
for name in (meta.cases or ""):gmatch("[^,]+") do case_names[#case_names + 1] = name end

local devices_json = {}
for _, d in ipairs(DEVICES) do
  if measured[d.name] then
    devices_json[d.name] = { kind = d.kind, group = d.group, peer = d.peer, also = d.also,
                             path = meta["dev." .. d.name .. ".path"],
                             setup = meta["dev." .. d.name .. ".setup"],
                             queue = meta["dev." .. d.name .. ".queue"],
                             memory = meta["dev." .. d.name .. ".memory"], -- the Lua servers' memory
                             stop = meta["dev." .. d.name .. ".stop"] }    -- how a Lua server ended
  end
end

local errors = {}
for line in (read_file(dir .. "/errors.txt") or ""):gmatch("[^\n]+") do errors[#errors + 1] = line end

local cases_json, stall_json = {}, nil
for _, cname in ipairs(case_names) do
  local c = case_by_name(cname) or die("unknown case " .. cname .. " in meta.txt")
  if c.metric == "stall" then goto next_case end
  local runs = {}
  for r = 1, rounds do
    local path = ("%s/fio/%s-r%d.json"):format(dir, cname, r)
    local doc = load_fio(path)
    if doc then
      for _, job in ipairs(doc.jobs or {}) do
        runs[job.jobname] = runs[job.jobname] or {}
        local e = job_error(job)
        if e then
          errors[#errors + 1] = ("%s round %d %s: %s"):format(cname, r, job.jobname, e)
        else
          local n = job_numbers(job)
          n.round, n.error, n.io_bytes = r, nil, nil
          table.insert(runs[job.jobname], n)
        end
      end
    else
      errors[#errors + 1] = ("%s round %d: no fio result (%s)"):format(cname, r, tostring(select(2, load_fio(path))))
    end
  end
  local results, by = {}, {}
  for _, d in ipairs(DEVICES) do
    if measured[d.name] then
      local rs = runs[d.name] or {}
      local med, spread = {}, nil
      for _, k in ipairs({ "iops", "mb_s", "clat_mean_us", "clat_p50_us", "clat_p99_us" }) do
        local xs = {}
        for _, n in ipairs(rs) do xs[#xs + 1] = n[k] end
        med[k] = median(xs)
        if k == c.metric and med[k] and med[k] > 0 and #xs > 1 then
          local lo, hi = math.huge, -math.huge
          for _, x in ipairs(xs) do lo = math.min(lo, x); hi = math.max(hi, x) end
          spread = (hi - lo) / med[k]
        end
      end
      local res = { device = d.name, kind = d.kind, peer = d.peer, also = d.also, rounds = #rs, median = med,
                    spread = spread, runs = rs }
      if #rs == 0 then res.median = nil end
      results[#results + 1] = res
      by[d.name] = res
    end
  end
  local function value(name)
    local r = by[name]
    return r and r.median and r.median[c.metric]
  end
  for _, res in ipairs(results) do
    local v = value(res.device)
    if v and res.peer and value(res.peer) then res.vs_peer = v / value(res.peer) end
    -- vs_nbdkit for the C targets (as before), vs_null_blk for lua-ram
    if v and res.also and value(res.also) then res[also_key(res)] = v / value(res.also) end
  end
  cases_json[#cases_json + 1] = { name = c.name, label = c.label, rw = c.rw, bs = c.bs, iodepth = c.iodepth,
                                  metric = c.metric, results = results }
  ::next_case::
end
-- The stall case: one result per event.
for _, cname in ipairs(case_names) do
  if cname == "stall" then
    local c = case_by_name("stall")
    local info = read_record(read_file(dir .. "/stall/info.txt"))
    stall_json = { rw = c.rw, bs = c.bs, iodepth = c.iodepth, runtime = STALL.runtime, event_at = STALL.event_at,
                   window_s = STALL.window_s, size = STALL.size, setup = info.setup, fio = info.fio, events = {} }
    for _, e in ipairs(STALL.events) do
      local res, errs = stall_event(dir .. "/stall", e, rounds, info, meta.kernel)
      stall_json.events[#stall_json.events + 1] = res
      for _, x in ipairs(errs) do errors[#errors + 1] = x end
    end
  end
end

-- The table.
local function fmt_ratio(x, peer)
  if not x then return "-" end
  return ("%.2fx%s"):format(x, peer and (" " .. peer) or "")
end
if #cases_json > 0 then
  print(("Linux %s (%s): fio %s, ioengine=%s direct=1 numjobs=1, %s s + %s s ramp per run, median over %d interleaved round(s)")
    :format(meta.release or "?", meta.kernel or "?", meta.fio_version or "?", meta.ioengine or "io_uring",
            meta.runtime or "?", meta.ramp or "?", rounds))
  local lua_ram = measured["lua-ram"] or measured["nbdkit-lua"]
  print(("qemu TCG, 2 vCPUs; device size %s%s, one hardware queue each%s, scheduler none on blk-mq devices")
    :format(meta.size or "?", lua_ram and meta.lua_size and (" (lua-ram and nbdkit-lua: " .. meta.lua_size .. ")") or "",
            measured["lua-ram"] and " (lua-ram: two)" or ""))
else
  print(("Linux %s (%s): fio %s, the stall case alone, %d round(s); qemu TCG, 2 vCPUs")
    :format(meta.release or "?", meta.kernel or "?", meta.fio_version or "?", rounds))
end
if meta.host then print("this machine: " .. meta.host) end
if meta.vm_memory then print("VM memory: " .. meta.vm_memory) end
local hdr = ("%-18s %-10s %12s %9s %9s %9s %7s  %-16s %s")
if #cases_json > 0 then
  print(hdr:format("case", "device", "result", "clat mean", "clat p50", "clat p99", "spread", "vs peer", "also vs"))
  print(hdr:format("", "", "", "us", "us", "us", "", "", ""))
end
for _, cj in ipairs(cases_json) do
  for _, res in ipairs(cj.results) do
    local m = res.median
    local result = "-"
    if m then
      result = cj.metric == "mb_s" and (("%.0f MB/s"):format(m.mb_s)) or (si(m.iops) .. " IOPS")
    end
    print(hdr:format(cj.label, res.device, result,
      m and ("%.1f"):format(m.clat_mean_us) or "-", m and ("%.1f"):format(m.clat_p50_us) or "-",
      m and m.clat_p99_us and ("%.0f"):format(m.clat_p99_us) or "-",
      res.spread and ("%.0f%%"):format(res.spread * 100) or "-",
      fmt_ratio(res.vs_peer, res.peer), fmt_ratio(res.also and res[also_key(res)], res.also)))
  end
end
-- The Lua servers: their memory, and how they ended (SIGTERM, exit, device deleted).
for _, d in ipairs(DEVICES) do
  local dj = devices_json[d.name]
  if dj and (dj.memory or dj.stop) then
    print(("%s: %s"):format(d.name, table.concat({ dj.memory, dj.stop }, "; ")))
  end
end
-- The aims of the Lua comparisons, for the cases where both sides ran.
local function by_name(cj, name)
  for _, res in ipairs(cj.results) do
    if res.device == name then return res end
  end
end
local aims_json = {}
for _, aim in ipairs(AIMS) do
  local lines = {}
  for _, cj in ipairs(cases_json) do
    if cj.iodepth == aim.iodepth and (not aim.rw or cj.rw == aim.rw) and cj.metric == "iops" then
      local peer_iops = {} -- round -> the peer's IOPS in it
      for _, res in ipairs(cj.results) do
        if res.device == aim.peer then
          for _, n in ipairs(res.runs) do peer_iops[n.round] = n.iops end
        end
      end
      for _, res in ipairs(cj.results) do
        if res.device == aim.device and res.peer == aim.peer and res.vs_peer then
          local met = res.vs_peer >= aim.at_least
          -- the ratio within each round too: how far this machine's noise moves it
          local per_round, reached, lo, hi = {}, 0, math.huge, -math.huge
          for _, n in ipairs(res.runs) do
            local p = peer_iops[n.round]
            if p and p > 0 then
              local x = n.iops / p
              per_round[#per_round + 1] = x
              if x >= aim.at_least then reached = reached + 1 end
              lo, hi = math.min(lo, x), math.max(hi, x)
            end
          end
          local rounds_said = #per_round > 1
            and (", %d of %d rounds at %.1fx or more, %.2f to %.2f"):format(reached, #per_round, aim.at_least, lo, hi) or ""
          -- what the aim asks for, against the ceiling: medians, and round by round
          local ceiling_said, asked_over_ceiling, above = "", nil, 0
          local top = aim.ceiling and by_name(cj, aim.ceiling)
          if top and top.median and top.median.iops > 0 then
            local asked = aim.at_least * by_name(cj, aim.peer).median.iops
            asked_over_ceiling = asked / top.median.iops
            local compared = 0
            for _, n in ipairs(top.runs) do
              local p = peer_iops[n.round]
              if p then
                compared = compared + 1
                if aim.at_least * p > n.iops then above = above + 1 end
              end
            end
            ceiling_said = ("; %.0f x %s is %s IOPS, %.2fx %s's %s (above it in %d of %d rounds), %s %.2fx %s")
              :format(aim.at_least, aim.peer, si(asked), asked_over_ceiling, aim.ceiling, si(top.median.iops), above,
                      compared, aim.device, res.median.iops / top.median.iops, aim.ceiling)
          end
          lines[#lines + 1] = ("%s %.2fx (%s%s)%s"):format(cj.label, res.vs_peer, met and "met" or "not met", rounds_said,
                                                          ceiling_said)
          aims_json[#aims_json + 1] = { aim = aim.text, case = cj.name, device = aim.device, peer = aim.peer,
                                        ratio = res.vs_peer, at_least = aim.at_least, met = met,
                                        round_ratios = per_round, ceiling = top and aim.ceiling or nil,
                                        asked_over_ceiling = asked_over_ceiling,
                                        rounds_asked_above_ceiling = top and above or nil }
        end
      end
    end
  end
  if #lines > 0 then print(("aim: %s: %s"):format(aim.text, table.concat(lines, "; "))) end
end
if stall_json then
  for _, res in ipairs(stall_json.events) do print(res.line) end
end
if #errors > 0 then
  print("errors:")
  for _, e in ipairs(errors) do print("  " .. e) end
end

local settings = {}
for _, k in ipairs(meta_order) do
  if not k:match("^dev%.") then settings[k] = (k == "rounds" or k == "runtime" or k == "ramp") and tonumber(meta[k]) or meta[k] end
end
local doc = {
  kernel = meta.kernel, release = meta.release, generated = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  settings = settings, devices = devices_json, cases = cases_json, aims = aims_json, stall = stall_json, errors = errors,
  notes = "result medians over the rounds; spread = (max - min) / median of the case's metric; "
       .. "vs_peer and vs_<also> (vs_nbdkit, vs_null_blk) compare medians of the case's metric (iops, or mb_s for the 128k read); "
       .. "an aim's round_ratios are the device's IOPS over the peer's within each round; "
       .. "asked_over_ceiling: at_least x the peer's median over the ceiling device's median, "
       .. "rounds_asked_above_ceiling: in how many rounds at_least x the peer's IOPS exceeded the ceiling's; "
       .. "stall: per event, medians over the rounds of the longest I/O's latency, the p99 (nearest rank) of the I/Os"
       .. " in flight within window_s of the event and of every other I/O; longest_start_ms: when the longest I/O"
       .. " began, from the event; done_s: how long the event's command took (ublk upgrade); errors: fio's, summed",
}
local f = io.open(out_path, "w") or die("cannot write " .. out_path)
local keyorder = {
  "kernel", "release", "generated", "settings", "devices", "cases", "aims", "stall", "errors", "notes",
  "only", "rounds", "runtime", "ramp", "size", "lua_size", "ioengine", "fio_version", "vm", "vm_memory", "host", "order",
  "name", "label", "rw", "bs", "iodepth", "metric", "results", "device", "kind", "group", "peer", "also",
  "path", "setup", "queue", "memory", "stop", "aim", "case", "ratio", "at_least", "met", "round_ratios",
  "ceiling", "asked_over_ceiling", "rounds_asked_above_ceiling",
  "median", "spread", "vs_peer", "vs_nbdkit", "vs_null_blk", "runs", "round", "iops", "mb_s", "clat_mean_us",
  "clat_p50_us", "clat_p99_us",
  "window_s", "event_at", "fio", "events", "event", "text", "unsupported", "line", "longest_min_ms", "longest_max_ms",
  "longest_ms", "longest_start_ms", "p99_around_ms", "around_ios", "p99_baseline_ms", "baseline_ios", "ios", "event_at_s",
  "done_s", "old_pid", "new_pid", "after",
}
for _, d in ipairs(DEVICES) do keyorder[#keyorder + 1] = d.name end
f:write(json.encode(doc, { indent = true, keyorder = keyorder }), "\n")
f:close()
os.exit(#errors == 0 and 0 or 1)
