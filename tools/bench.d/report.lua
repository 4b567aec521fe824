-- tools/bench's Lua half: the one list of cases, devices, --only sets and aims (tools/bench --help
-- prints it: `report.lua help`), a progress line per fio run (in the VM), and the medians, ratios,
-- table and JSON (on the host, from the folder the VM left behind).
--
--   lua5.4 tools/bench.d/report.lua help                   the cases, devices, --only sets and aims, as text
--   lua5.4 tools/bench.d/report.lua cases                  one line per case: name rw bs iodepth
--   lua5.4 tools/bench.d/report.lua devices [ONLY]         one line per device: name kind peer group also setup
--                                                          (ONLY: all, base, peers, ublk or lua: those that run)
--   lua5.4 tools/bench.d/report.lua check FIO_JSON         every job's error, or nothing; exit 1 on any
--   lua5.4 tools/bench.d/report.lua progress FIO_JSON CASE "null_blk 68.1k  brd 63.0k ..." (exit 1 on errors)
--   lua5.4 tools/bench.d/report.lua report DIR OUT_JSON    table on stdout, OUT_JSON written
local json -- dkjson, required below for check, progress and report only (help needs no module)

-- The cases, in the order they run and print. metric: what the table shows and the ratios compare;
-- latency: the case is there for its completion latency (the clat columns) too.
local CASES = {
  { name = "randread-4k-qd32",  label = "randread 4k qd32",  rw = "randread",  bs = "4k",   iodepth = 32, metric = "iops" },
  { name = "randwrite-4k-qd32", label = "randwrite 4k qd32", rw = "randwrite", bs = "4k",   iodepth = 32, metric = "iops" },
  { name = "randread-4k-qd1",   label = "randread 4k qd1",   rw = "randread",  bs = "4k",   iodepth = 1,  metric = "iops", latency = true },
  { name = "read-128k-qd32",    label = "seq read 128k qd32", rw = "read",     bs = "128k", iodepth = 32, metric = "mb_s" },
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

-- --only: which devices run, in the order --help lists them.
local ONLY = {
  { name = "all", text = "every device (the default)", want = function() return true end },
  { name = "base", text = "everything but the Lua comparisons (the set before they were added)",
    want = function(d) return d.group == "base" end },
  { name = "peers", text = "the devices of kind peer", want = function(d) return d.kind == "peer" end },
  { name = "ublk", text = "our devices (kind ublk)", want = function(d) return d.kind == "ublk" end },
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
    print(("  %-18s rw=%s bs=%s iodepth=%d: %s%s"):format(c.name, c.rw, c.bs, c.iodepth,
      c.metric == "mb_s" and "MB/s" or "IOPS", c.latency and ", with mean and p50 completion latency" or ""))
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
  for _, c in ipairs(CASES) do print(c.name, c.rw, c.bs, c.iodepth) end
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
  die("usage: report.lua help|cases|devices [ONLY]|check FIO_JSON|progress FIO_JSON|report DIR OUT_JSON")
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

local cases_json = {}
for _, cname in ipairs(case_names) do
  local c = case_by_name(cname) or die("unknown case " .. cname .. " in meta.txt")
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
end

-- The table.
local function fmt_ratio(x, peer)
  if not x then return "-" end
  return ("%.2fx%s"):format(x, peer and (" " .. peer) or "")
end
print(("Linux %s (%s): fio %s, ioengine=%s direct=1 numjobs=1, %s s + %s s ramp per run, median over %d interleaved round(s)")
  :format(meta.release or "?", meta.kernel or "?", meta.fio_version or "?", meta.ioengine or "io_uring",
          meta.runtime or "?", meta.ramp or "?", rounds))
local lua_ram = measured["lua-ram"] or measured["nbdkit-lua"]
print(("qemu TCG, 2 vCPUs; device size %s%s, one hardware queue each%s, scheduler none on blk-mq devices")
  :format(meta.size or "?", lua_ram and meta.lua_size and (" (lua-ram and nbdkit-lua: " .. meta.lua_size .. ")") or "",
          measured["lua-ram"] and " (lua-ram: two)" or ""))
if meta.host then print("this machine: " .. meta.host) end
if meta.vm_memory then print("VM memory: " .. meta.vm_memory) end
local hdr = ("%-18s %-10s %12s %9s %9s %9s %7s  %-16s %s")
print(hdr:format("case", "device", "result", "clat mean", "clat p50", "clat p99", "spread", "vs peer", "also vs"))
print(hdr:format("", "", "", "us", "us", "us", "", "", ""))
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
  settings = settings, devices = devices_json, cases = cases_json, aims = aims_json, errors = errors,
  notes = "result medians over the rounds; spread = (max - min) / median of the case's metric; "
       .. "vs_peer and vs_<also> (vs_nbdkit, vs_null_blk) compare medians of the case's metric (iops, or mb_s for the 128k read); "
       .. "an aim's round_ratios are the device's IOPS over the peer's within each round; "
       .. "asked_over_ceiling: at_least x the peer's median over the ceiling device's median, "
       .. "rounds_asked_above_ceiling: in how many rounds at_least x the peer's IOPS exceeded the ceiling's",
}
local f = io.open(out_path, "w") or die("cannot write " .. out_path)
local keyorder = {
  "kernel", "release", "generated", "settings", "devices", "cases", "aims", "errors", "notes",
  "only", "rounds", "runtime", "ramp", "size", "lua_size", "ioengine", "fio_version", "vm", "vm_memory", "host", "order",
  "name", "label", "rw", "bs", "iodepth", "metric", "results", "device", "kind", "group", "peer", "also",
  "path", "setup", "queue", "memory", "stop", "aim", "case", "ratio", "at_least", "met", "round_ratios",
  "ceiling", "asked_over_ceiling", "rounds_asked_above_ceiling",
  "median", "spread", "vs_peer", "vs_nbdkit", "vs_null_blk", "runs", "round", "iops", "mb_s", "clat_mean_us",
  "clat_p50_us", "clat_p99_us",
}
for _, d in ipairs(DEVICES) do keyorder[#keyorder + 1] = d.name end
f:write(json.encode(doc, { indent = true, keyorder = keyorder }), "\n")
f:close()
os.exit(#errors == 0 and 0 or 1)
