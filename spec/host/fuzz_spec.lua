-- Generated bad input: ublk.check with 20,000 option tables, and ublk.decode with random bytes of
-- every length. Each is accepted or refused with a message naming the key; none raises anything
-- else. The seed is printed; UBLK_FUZZ_SEED=N replays a run, UBLK_FUZZ_COUNT=N changes its size.
local ublk = require("ublk")

local SEED = math.tointeger(tonumber(os.getenv("UBLK_FUZZ_SEED") or "")) or os.time()
local COUNT = math.tointeger(tonumber(os.getenv("UBLK_FUZZ_COUNT") or "")) or 20000

local keys = { "size", "queues", "depth", "id", "max_io", "block_size", "physical_block_size", "io_min",
  "io_opt", "chunk_size", "virt_boundary", "read_only", "rotational", "volatile_cache", "fua", "discard",
  "discard_granularity", "discard_alignment", "max_discard", "max_write_zeroes", "max_discard_segments",
  "dma_alignment", "seg_boundary", "max_segment_size", "max_segments", "recovery", "flags",
  "target", "path", "direct", "offset", "handler", "hooks", "log", "queue_threads", "colour", 1, true }

local function value()
  local pick = math.random(24)
  if pick == 1 then return 0 / 0 end
  if pick == 2 then return math.huge end
  if pick == 3 then return -math.huge end
  if pick == 4 then return -math.random(1 << 40) end
  if pick == 5 then return 0 end
  if pick == 6 then return math.random() * 1e6 end
  if pick == 7 then return 1 << math.random(0, 62) end
  if pick == 8 then return math.maxinteger end
  if pick == 9 then return math.mininteger end
  if pick == 10 then return ({ "1.5G", "-1M", "4k", "64M", "1G", "", "lots", "0x10", "1e3", "512 B", "9T" })[math.random(11)] end
  if pick == 11 then return math.random(2) == 1 end
  if pick == 12 then return {} end
  if pick == 13 then return function() end end
  if pick == 14 then return { read = function() end } end
  if pick == 15 then return { read = 1, write = "x" } end
  if pick == 16 then return { "user_copy", "warp" } end
  if pick == 17 then return ({ "null", "ram", "file", "lua", "requeue", "fail_io", "fail_in_flight" })[math.random(7)] end
  if pick == 18 then return "/nonexistent-dir/ublk-fuzz.img" end
  if pick == 19 then return io.stdout end
  if pick == 20 then return { bogus = function() end } end
  return math.random(0, 1 << math.random(0, 30))
end

local function options()
  local o = {}
  for _ = 1, math.random(0, 6) do o[keys[math.random(#keys)]] = value() end
  if math.random(3) > 1 then o.size = o.size or value() end
  return o
end

local function show(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = ("%s=%s"):format(tostring(k), tostring(v)) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

describe("generated bad input", function()
  it(("ublk.check refuses or accepts each of %d option tables with a message naming the key (seed %d)"):format(COUNT, SEED), function()
    print(("fuzz: UBLK_FUZZ_SEED=%d UBLK_FUZZ_COUNT=%d"):format(SEED, COUNT))
    math.randomseed(SEED)
    local accepted, refused, failed = 0, 0, 0
    for i = 1, COUNT do
      local o = options()
      local ok, a, b = pcall(ublk.check, o)
      if not ok then
        assert(type(a) == "string", ("case %d %s: raised a %s, not a message"):format(i, show(o), type(a)))
        local named = a:match("^ublk%.new: ([%w_.]+) = ") or a:match("^ublk%.new: unknown option")
          or a:match("^ublk%.new: size is required") or a:match("^ublk%.new: expected a table")
        assert(named, ("case %d %s: the message names no key: %s"):format(i, show(o), a))
        refused = refused + 1
      elseif a == nil then
        assert(type(b) == "string", ("case %d %s: nil without a message"):format(i, show(o)))
        failed = failed + 1
      else
        assert.are.equal("table", type(a))
        accepted = accepted + 1
      end
    end
    print(("fuzz: %d accepted, %d refused as misuse, %d refused by the OS"):format(accepted, refused, failed))
    assert.is_true(accepted > 0 and refused > 0, "the generator reaches both outcomes")
  end)

  it(("ublk.decode reads random bytes of every length of each kind without raising (seed %d)"):format(SEED), function()
    math.randomseed(SEED)
    local decode = require("ublk.decode")
    for _, kind in ipairs(decode.kinds) do
      for len = 0, 200 do
        for _ = 1, 5 do
          local bytes = {}
          for j = 1, len do bytes[j] = string.char(math.random(0, 255)) end
          local ok, t, msg = pcall(ublk.decode, kind, table.concat(bytes))
          assert(ok, ("%s of %d bytes raised: %s"):format(kind, len, tostring(t)))
          assert(t ~= nil or type(msg) == "string", ("%s of %d bytes: nil without a message"):format(kind, len))
          if t then assert(pcall(decode.format, t), kind .. " formats") end
        end
      end
    end
  end)
end)
