-- Kernel refusals become sentences: command, errno name and number, the kernel's checks, our suspects.
local errors = require("ublk.errors")
local core = require("ublk.core")
local E = core.errno

describe("error explanations", function()
  it("lists the kernel's ADD_DEV -EINVAL checks and marks what we sent that fails one", function()
    local msg = errors.explain({ command = "ADD_DEV", dev_id = 0xffffffff,
      header = { dev_id = 0xffffffff, queue_id = 0, len = 64 },
      info = { dev_id = 0xffffffff, nr_hw_queues = 1, queue_depth = 32, flags = 1 << 4 } }, E.EINVAL)
    assert.matches("^ADD_DEV failed: Invalid argument %(%-EINVAL, errno 22%); the kernel refuses when", msg)
    assert.matches("SQE must be 128 bytes", msg)
    assert.matches("\n  ! header.queue_id must be 0xffff: we sent 0x0", msg, 1)
    assert.matches("\n  ! recovery flags", msg)
    assert.matches("\n    header.dev_id must equal dev_info.dev_id", msg)
    assert.matches("dev_id must be below 1048576", msg)
  end)

  it("names the taken id on -EEXIST", function()
    local msg = errors.explain({ command = "ADD_DEV", dev_id = 7 }, E.EEXIST)
    assert.are.equal("ADD_DEV (device 7) failed: File exists (-EEXIST, errno 17): device id 7 is already " ..
      "taken (or still being deleted): choose another id, or leave id = nil to let the kernel pick one", msg)
  end)

  it("names the missing device on -ENODEV", function()
    local msg = errors.explain({ command = "DEL_DEV", dev_id = 42 }, E.ENODEV)
    assert.are.equal("DEL_DEV (device 42) failed: No such device (-ENODEV, errno 19): there is no ublk device 42 (ublk list shows the ones that exist)", msg)
  end)

  it("explains privileges on -EPERM and -EACCES", function()
    assert.matches("CAP_SYS_ADMIN", errors.explain({ command = "GET_PARAMS", dev_id = 1 }, E.EPERM))
    assert.matches("run as root", errors.explain({ command = "ADD_DEV" }, E.EPERM))
    assert.matches("only be set before the device is started", errors.explain({ command = "SET_PARAMS", dev_id = 1 }, E.EACCES))
    assert.matches("ublks_max", errors.explain({ command = "ADD_DEV" }, E.EACCES))
  end)

  it("explains an opcode the kernel does not know", function()
    assert.matches("does not know UPDATE_SIZE", errors.explain({ command = "UPDATE_SIZE", dev_id = 1 }, E.EOPNOTSUPP))
  end)

  it("still says command and errno for an errno it has no checks for", function()
    assert.are.equal("STOP_DEV (device 3) failed: Numerical result out of range (-ERANGE, errno 34)",
      errors.explain({ command = "STOP_DEV", dev_id = 3 }, E.ERANGE))
  end)
end)
