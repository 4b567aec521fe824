-- A disk that misbehaves where you tell it: the file target serves IMAGE at C speed, and Lua hooks
-- fail the writes that touch one range (EIO) and hold back the reads that touch another, for seeing
-- how a file system or a program copes with a bad or slow disk.
--
--   lua5.4 examples/faulty.lua IMAGE [fail_writes=OFFSET+LENGTH] [delay_reads=OFFSET+LENGTH] [delay=SECONDS]
--   lua5.4 examples/faulty.lua disk.img fail_writes=64M+1M delay_reads=0+16M delay=0.05
--
-- Sizes take K, M and G. Every other request, and every other op (flush, discard), never leaves C.
-- Prints "ublk device N: /dev/ublkbN ..." once the disk is usable, serves until Ctrl-C, SIGTERM or
-- `ublk del N`, then deletes the device and says how many requests it failed and delayed.
local ublk = require("ublk")
local parse_size = require("ublk.params").parse_size

local function usage(why)
  io.stderr:write("faulty.lua: ", why, "\nusage: lua5.4 examples/faulty.lua IMAGE [fail_writes=OFFSET+LENGTH]",
    " [delay_reads=OFFSET+LENGTH] [delay=SECONDS]\n")
  os.exit(2)
end

local image = arg[1] or usage("name the image file")
local opt = { delay = "0.1" }
for i = 2, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.+)$")
  if not (k == "fail_writes" or k == "delay_reads" or k == "delay") then usage("unknown argument " .. arg[i]) end
  opt[k] = v
end

-- "OFFSET+LENGTH" -> first byte, byte past the end
local function range(key)
  if not opt[key] then return nil end
  local a, b = opt[key]:match("^([^+]+)%+(.+)$")
  local first, len = parse_size(a or ""), parse_size(b or "")
  if not first or not len or len <= 0 then usage(key .. "=" .. opt[key] .. ": expected OFFSET+LENGTH, e.g. 64M+1M") end
  return { first, first + len }
end
local fail, slow, delay = range("fail_writes"), range("delay_reads"), tonumber(opt.delay)
if not delay or delay < 0 then usage("delay=" .. opt.delay .. ": expected seconds, e.g. 0.05") end

local function touches(r, req) return r and req.offset < r[2] and req.offset + req.length > r[1] end

local failed, delayed = 0, 0
local hooks = {}
if fail then
  hooks.write = function(req)
    if touches(fail, req) then
      failed = failed + 1
      return nil, "EIO"
    end
    -- returning nothing passes the request on to the file target
  end
end
if slow then
  hooks.read = function(req)
    if touches(slow, req) then
      delayed = delayed + 1
      ublk.sleep(delay) -- only this request waits; the others go on
    end
    return "pass"
  end
end
if not next(hooks) then usage("give fail_writes=..., delay_reads=... or both") end

local dev <close> = assert(ublk.new { target = "file", path = image, queues = 2, hooks = hooks })
assert(dev:start())
io.stdout:setvbuf("line")
print(("ublk device %d: %s (%s, failing writes to %s, delaying reads of %s by %g s)"):format(dev.id, dev.path,
  image, opt.fail_writes or "nothing", opt.delay_reads or "nothing", delay))
local _, why = assert(dev:run())
print(("stopped (%s) and deleted; %d writes failed, %d reads delayed"):format(why, failed, delayed))
