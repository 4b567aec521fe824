-- `ublk doctor` on kernels the VM does not boot. Its verdicts come from what the library reads, so a
-- stand-in for the public module and a control node that opens (/dev/null) play Linux 6.0 to 6.4,
-- whose ublk has no GET_FEATURES and only the legacy opcodes.
local run = require("support.run")

-- Run doctor.run with a module whose features() gives (nil, message, errno name); print the
-- features and opcodes verdicts as "name ok detail" lines.
local function doctor_with(features_errno)
  local script = ([[
    package.path = "./lua/?.lua;" .. package.path
    package.cpath = package.cpath .. ";./build/?.so" -- after the specs' own build (run.cpath_env)
    local core = require("ublk.core")
    local fake = { features = function() return nil, "GET_FEATURES failed: test", core.errno.%s end }
    for _, c in ipairs(require("ublk.doctor").run(fake, {}).checks) do
      if c.name == "features" or c.name == "opcodes" then print(c.name, c.ok, c.detail) end
    end
  ]]):format(features_errno)
  local code, out, err = run.run(run.cpath_env() .. " UBLK_CONTROL=/dev/null lua5.4 -e " .. run.quote(script))
  assert.are.equal(0, code, err)
  return out
end

describe("ublk doctor", function()
  it("passes a kernel without GET_FEATURES (Linux 6.0 to 6.4): devices are made with the legacy opcodes", function()
    local out = doctor_with("EOPNOTSUPP")
    assert.matches("features\ttrue\tGET_FEATURES is missing %(Linux < 6%.5%): devices can be made, with the legacy opcodes", out)
    assert.matches("opcodes\ttrue\tonly legacy opcodes", out)
  end)

  it("fails the features check when GET_FEATURES fails for another reason", function()
    local out = doctor_with("EPERM")
    assert.matches("features\tfalse\tGET_FEATURES failed: test", out)
    assert.is_nil(out:find("opcodes", 1, true))
  end)
end)
