-- The Lua RAM disk of examples/ramdisk.lua as an nbdkit Lua plugin, for `make bench`: the same
-- sparse table of 4 KiB blocks, zeros where never written.
--   nbdkit lua tools/bench.d/ramdisk-nbdkit.lua size=BYTES
local BS = 4096
local size = 256 * 2^20
local blocks = {}
local ZERO = string.rep("\0", BS)

function config(key, value)
  if key == "size" then size = tonumber(value) else error("unknown parameter " .. key) end
end

function open(readonly) return {} end
function get_size(h) return size end
function can_write(h) return true end
function can_trim(h) return true end
function can_flush(h) return true end
function flush(h) end

function pread(h, count, offset)
  local parts, first = {}, offset // BS
  for i = 0, count // BS - 1 do parts[i + 1] = blocks[first + i] or ZERO end
  return table.concat(parts)
end

function pwrite(h, buf, offset)
  local first = offset // BS
  for i = 0, #buf // BS - 1 do blocks[first + i] = buf:sub(i * BS + 1, (i + 1) * BS) end
end

function trim(h, count, offset)
  for b = offset // BS, (offset + count) // BS - 1 do blocks[b] = nil end
end
