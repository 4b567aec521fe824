-- The handler helpers that need no kernel: ublk.sleep, ublk.readable and ublk.writable outside a
-- handler (they block the thread, as their names say) and their argument checks.
local ublk = require("ublk")

describe("handler helpers outside a handler", function()
  it("ublk.sleep sleeps the thread", function()
    local t0 = ublk.now()
    ublk.sleep(0.05)
    assert.is_true(ublk.now() - t0 >= 0.05)
  end)

  it("ublk.readable and ublk.writable poll a descriptor, with a timeout", function()
    local uv = require("luv")
    local pipe = uv.pipe()
    assert.is_true(ublk.writable(pipe.write, 1))
    assert.is_false(ublk.readable(pipe.read, 0.01))
    uv.fs_write(pipe.write, "x")
    assert.is_true(ublk.readable(pipe.read, 1))
    uv.fs_close(pipe.read)
    uv.fs_close(pipe.write)
  end)

  it("name what is wrong with their arguments", function()
    assert.has_error(function() ublk.sleep(-1) end, "ublk.sleep: seconds must be a number >= 0, got -1")
    assert.has_error(function() ublk.sleep("1") end, "ublk.sleep: seconds must be a number >= 0, got 1")
    assert.has_error(function() ublk.readable("stdin") end,
      "ublk.readable: expected a file descriptor (an integer >= 0, or an object with :getfd()), got stdin")
    assert.has_error(function() ublk.writable(1, -2) end, "ublk.writable: timeout must be a number of seconds >= 0")
  end)
end)
