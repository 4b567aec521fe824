-- The targets' options, checked before anything reaches the kernel (no driver needed).
local targets = require("ublk.targets")
local run = require("support.run")

local TMP = run.TMP

describe("target options", function()
  it("passes a device without a target through untouched", function()
    local dev, tgt = targets.prepare { size = 4096, queues = 2 }
    assert.are.same({ size = 4096, queues = 2 }, dev)
    assert.is_nil(tgt)
  end)

  it("null and ram take DISCARD and WRITE_ZEROES unless told otherwise", function()
    for _, name in ipairs { "null", "ram" } do
      local dev, tgt = targets.prepare { target = name, size = "1G" }
      assert.is_true(dev.discard)
      assert.are.equal(name, tgt.target)
      dev = targets.prepare { target = name, size = "1G", discard = false }
      assert.is_false(dev.discard)
    end
  end)

  it("refuses recovery for the ram target, whose data dies with its server", function()
    assert.has_error(function() targets.prepare { target = "ram", size = "1G", recovery = "requeue" } end,
      "ublk.new: recovery = requeue: the ram target keeps its data in the server's memory, which dies with it " ..
      "(a new server would serve zeros): use target = 'file'")
    assert.is_not_nil((targets.prepare { target = "null", size = "1G", recovery = "requeue" }))
  end)

  it("refuses a ram disk over 64 TiB and options of another target", function()
    assert.has_error(function() targets.prepare { target = "ram", size = "65T" } end,
      "ublk.new: size = 65T: the ram target holds at most 64 TiB")
    assert.has_error(function() targets.prepare { target = "null", size = "1G", direct = false } end,
      "ublk.new: direct = false: only the file target takes it (target = 'null')")
    assert.has_error(function() targets.prepare { target = 7 } end,
      "ublk.new: target = 7: must be one of null, ram, file")
  end)

  it("names the target and handler options too when an option is unknown", function()
    local ok, err = pcall(require("ublk").check, { size = "1M", target = "null", hook = {} })
    assert.is_false(ok)
    assert.matches("^ublk.new: unknown option 'hook' %(known: size, .*, hooks, .*queue_threads%)$", err)
  end)

  describe("file", function()
    local img = TMP .. "/lua-ublk-targets-spec.img"
    before_each(function() os.remove(img) end)
    after_each(function() os.remove(img) end)

    it("takes the size from the file and derives cache, FUA and discard", function()
      assert.are.equal(0, (run.plain("truncate -s 10M " .. img)))
      local dev, tgt = targets.prepare { target = "file", path = img }
      assert.are.equal(10 * 2^20, dev.size)
      assert.is_true(dev.volatile_cache)
      assert.is_true(dev.fua)
      assert.is_true(dev.discard)
      assert.is_false(dev.read_only)
      assert.are.equal("file", tgt.kind)
      assert.are.equal(img, tgt.path)
      assert.are.equal(0, tgt.offset)
    end)

    it("creates a missing file, sparse, when a size is given", function()
      local dev = targets.prepare { target = "file", path = img, size = "3M" }
      assert.are.equal("3M", dev.size)
      local f = assert(io.open(img))
      assert.are.equal(3 * 2^20, f:seek("end"))
      f:close()
    end)

    it("creates no file for options that are misuse", function()
      assert.has_error(function() targets.prepare { target = "file", path = img, size = "3M", block_size = 1000 } end,
        "ublk.new: block_size = 1000: must be a power of two from 512 to 4 KiB (the page size)")
      assert.is_nil(io.open(img), "the file was not created")
    end)

    it("returns nil, message, errno for a missing file without a size", function()
      local dev, msg, errno = targets.prepare { target = "file", path = img }
      assert.is_nil(dev)
      assert.are.equal(require("ublk.core").errno.ENOENT, errno)
      assert.matches("give size to create it", msg)
    end)

    it("names the field and the limit of a bad value", function()
      assert.are.equal(0, (run.plain("truncate -s 1M " .. img)))
      assert.has_error(function() targets.prepare { target = "file", path = img, size = "2M" } end,
        ("ublk.new: size = 2M: must be at most 1048576 bytes, what %s holds past offset 0"):format(img))
      assert.has_error(function() targets.prepare { target = "file", path = img, offset = 100 } end,
        "ublk.new: offset = 100: must be a multiple of 512 bytes")
      assert.has_error(function() targets.prepare { target = "file" } end,
        "ublk.new: path = nil: the file target needs the path of a file or block device")
      assert.has_error(function() targets.prepare { target = "file", path = img, direct = "yes" } end,
        "ublk.new: direct = yes: must be true or false")
    end)

    it("starts the device at offset, sized to what is left", function()
      assert.are.equal(0, (run.plain("truncate -s 4M " .. img)))
      local dev, tgt = targets.prepare { target = "file", path = img, offset = "1M" }
      assert.are.equal(3 * 2^20, dev.size)
      assert.are.equal(2^20, tgt.offset)
    end)
  end)

  it("ublk add refuses bad options before going to the background (exit 2)", function()
    local code, _, err = run.ublk("add -t tape")
    assert.are.equal(2, code)
    assert.matches("add: %-t/%-%-target tape: must be one of null, ram, file", err)
    code, _, err = run.ublk("add -t null --queues x")
    assert.are.equal(2, code)
    assert.matches("%-%-queues 'x' is not a whole number", err)
    code, _, err = run.ublk("add")
    assert.are.equal(2, code)
    assert.matches("name a target", err)
    code, _, err = run.ublk("add -t ram -q 0")
    assert.are.equal(2, code)
    assert.matches("add: %-q/%-%-queues 0: must be a whole number from 1 to 4096", err)
  end)
end)

describe("handler and hooks options", function()
  local f = function() end
  local function refused(opts, msg)
    assert.has_error(function() targets.prepare(opts) end, msg)
  end

  it("name the field and what is wrong with it", function()
    refused({ size = 4096, handler = 5 },
      "ublk.new: handler = 5: must be a table of functions by op (read, write, flush, discard, write_zeroes)")
    refused({ size = 4096, handler = {} }, "ublk.new: handler = {}: names no op")
    refused({ size = 4096, handler = { write = f } },
      "ublk.new: handler.read = nil: is required: a block device must answer reads")
    refused({ size = 4096, handler = { read = f, trim = f } },
      "ublk.new: handler.trim = a function: is not an op: use read, write, flush, discard or write_zeroes")
    refused({ size = 4096, handler = { read = 5 } }, "ublk.new: handler.read = 5: must be a function(req)")
    refused({ size = 4096, handler = { read = f }, target = "null" },
      "ublk.new: target = null: is not taken with handler: a handler device is served by its Lua functions (to run Lua before a C target, use hooks)")
    refused({ size = 4096, handler = { read = f }, path = "/x" }, "ublk.new: path = /x: only the file target takes it")
    refused({ size = 4096, hooks = { read = f } },
      "ublk.new: hooks = a table: hook a C target: give target = 'null', 'ram' or 'file' (or write the device with handler = {...})")
    refused({ size = 4096, target = "null", hooks = { read = f, flush = "no" } }, "ublk.new: hooks.flush = no: must be a function(req)")
    refused({ size = 4096, target = "null", hooks = { read = f }, log = 3 }, "ublk.new: log = 3: must be a function(line)")
    refused({ size = 4096, target = "null", log = f },
      "ublk.new: log = a function: logs failing handlers and hooks: give handler = {...} or hooks = {...} with it")
    refused({ size = 4096, log = f },
      "ublk.new: log = a function: logs failing handlers and hooks: give handler = {...} or hooks = {...} with it")
    refused({ size = 4096, handler = { read = f }, queue_threads = 1 }, "ublk.new: queue_threads = 1: must be true or false")
    refused({ size = 4096, target = "null", hooks = { read = f }, queue_threads = "no" }, "ublk.new: queue_threads = no: must be true or false")
    refused({ size = 4096, target = "null", queue_threads = false },
      "ublk.new: queue_threads = false: only a device with Lua in its path (handler = {...} or hooks = " ..
        "{...}) takes it: C targets without hooks always have queue threads")
  end)

  it("serve a handler device from the Lua thread unless queue_threads = true", function()
    assert.is_false(select(2, targets.prepare { size = 4096, handler = { read = f } }).queue_threads)
    assert.is_true(select(2, targets.prepare { size = 4096, handler = { read = f }, queue_threads = true }).queue_threads)
  end)

  it("serve a hooked C target from the Lua thread unless queue_threads = true, and one without hooks from queue threads", function()
    assert.is_false(select(2, targets.prepare { size = 4096, target = "null", hooks = { read = f } }).queue_threads)
    assert.is_true(select(2, targets.prepare { size = 4096, target = "null", hooks = { read = f }, queue_threads = true }).queue_threads)
    assert.is_nil(select(2, targets.prepare { size = 4096, target = "null" }).queue_threads)
  end)

  it("tell the kernel what the handler table serves, and refuse options that promise more", function()
    local dev, tgt = targets.prepare { size = 4096, handler = { read = f } }
    assert.is_true(dev.read_only)
    assert.is_nil(dev.volatile_cache)
    assert.is_nil(dev.discard)
    assert.are.equal("lua", tgt.target)
    dev = targets.prepare { size = 8192, handler = { read = f, write = f, flush = f, discard = f } }
    assert.is_nil(dev.read_only)
    assert.is_true(dev.volatile_cache)
    assert.is_true(dev.discard)
    assert.are.equal(0, dev.max_write_zeroes) -- discard, but no write-zeroes
    dev = targets.prepare { size = 8192, handler = { read = f, write = f, write_zeroes = f } }
    assert.are.equal(0, dev.max_discard)
    assert.are.equal(8192, dev.max_write_zeroes)
    refused({ size = 4096, handler = { read = f }, read_only = false },
      "ublk.new: read_only = false: needs handler.write, which the handler table lacks")
    refused({ size = 4096, handler = { read = f, write = f }, volatile_cache = true },
      "ublk.new: volatile_cache = true: needs handler.flush, which the handler table lacks")
    refused({ size = 4096, handler = { read = f, write = f }, max_discard = 4096 },
      "ublk.new: max_discard = 4096: needs handler.discard, which the handler table lacks")
  end)

  it("keep hooks beside the C target's own options", function()
    local dev, tgt = targets.prepare { target = "ram", size = "1M", hooks = { write = f } }
    assert.is_true(dev.discard)
    assert.are.equal("ram", tgt.target)
    assert.are.equal(f, tgt.hooks.write)
  end)
end)
