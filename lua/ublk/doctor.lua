--- `ublk doctor`: what the running kernel supports for ublk, and why not. Each check has a one-line
-- verdict and, when it fails, the fix.
-- @module ublk.doctor
local core = require("ublk.core")
local control = require("ublk.control")

local M = {}

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s and s:gsub("%s+$", "")
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Where this kernel keeps its modules, and whether ublk_drv is one of them or built in.
local function module_state(release)
  if exists("/sys/module/ublk_drv") then return "loaded" end
  for _, base in ipairs { "/lib/modules/", "/usr/lib/modules/" } do
    local dir = base .. release
    local builtin = read(dir .. "/modules.builtin")
    if builtin and builtin:find("ublk_drv.ko", 1, true) then return "builtin" end
    local dep = read(dir .. "/modules.dep")
    if dep and dep:find("ublk_drv.ko", 1, true) then return "available" end
  end
  local config = read("/boot/config-" .. release) or ""
  if config:find("CONFIG_BLK_DEV_UBLK=m", 1, true) then return "available" end
  if config:find("CONFIG_BLK_DEV_UBLK=y", 1, true) then return "builtin" end
  return "missing"
end

--- Run every check. `ublk` is the public module, `state` its internal state.
function M.run(ublk, state)
  local checks = {}
  local function check(name, ok, detail)
    checks[#checks + 1] = { name = name, ok = ok and true or false, detail = detail }
    return ok
  end

  local release = read("/proc/sys/kernel/osrelease") or "unknown"
  local major, minor = release:match("^(%d+)%.(%d+)")
  major, minor = tonumber(major) or 0, tonumber(minor) or 0
  check("kernel", major > 6 or (major == 6 and minor >= 0),
    ("Linux %s%s"):format(release, (major < 6) and ": ublk needs Linux 6.0 or newer" or ""))

  local mod = module_state(release)
  local mod_detail = ({
    loaded = "ublk_drv is loaded",
    builtin = "ublk is built into this kernel",
    available = "ublk_drv is available but not loaded: run `modprobe ublk_drv` as root",
    missing = ("this kernel (%s) has no ublk driver: it was built without CONFIG_BLK_DEV_UBLK and ships no ublk_drv module; boot a kernel that has it (Debian's 6.1+ kernels do), or run `make test`, which uses a VM"):format(release),
  })[mod]
  check("module", mod == "loaded" or mod == "builtin", mod_detail)

  local path = control.path()
  local ctl, ctl_msg, ctl_errno = core.open_control(path)
  if not ctl and ctl_errno == core.errno.ENOENT then
    ctl_msg = ("%s does not exist: %s"):format(path, mod == "missing" and "no ublk driver (see module)"
      or mod == "available" and "load the module: modprobe ublk_drv"
      or "the driver is there but the node is not: is devtmpfs mounted on /dev?")
  elseif not ctl then
    ctl_msg = ctl_msg .. " (run as root, or a udev rule must grant access)"
  end
  check("control", ctl ~= nil, ctl and (path .. " is present and opens read-write") or ctl_msg)
  if ctl then ctl:close() end

  local disabled = read("/proc/sys/kernel/io_uring_disabled")
  local dis = tonumber(disabled or "0")
  check("io_uring sysctl", dis == 0, ({
    [0] = "kernel.io_uring_disabled = " .. (disabled or "absent (io_uring always on)"),
    [1] = "kernel.io_uring_disabled = 1: only members of kernel.io_uring_group (and root) may use io_uring; set it to 0: sysctl -w kernel.io_uring_disabled=0",
    [2] = "kernel.io_uring_disabled = 2: io_uring is off for everyone; ublk cannot work: sysctl -w kernel.io_uring_disabled=0",
  })[dis] or ("kernel.io_uring_disabled = " .. tostring(disabled)))

  local ring, ring_msg = core.probe_ring()
  if ring then
    check("io_uring SQE128", ring.uring_cmd ~= false,
      ring.uring_cmd == false and "128-byte SQEs work but IORING_OP_URING_CMD is missing (Linux < 5.19)"
      or ("128-byte SQEs and IORING_OP_URING_CMD (opcode 46) work; the kernel knows %s io_uring opcodes"):format(
        ring.last_op and (ring.last_op + 1) or "?"))
  else
    check("io_uring SQE128", false, ring_msg .. ": the control ring needs IORING_SETUP_SQE128 (Linux 5.19+)")
  end

  local feats, fmsg, ferrno = nil, nil, nil
  if ctl then feats, fmsg, ferrno = ublk.features() end
  if feats then
    check("features", true, ("GET_FEATURES = 0x%x: %s"):format(feats.mask, table.concat(feats.names, ", ")))
    check("opcodes", feats.ioctl_encode, (feats.ioctl_encode and "ioctl-encoded opcodes (UBLK_U_CMD_*) accepted" or "only legacy opcodes")
      .. "; legacy opcodes " .. (feats.legacy_opcodes and "also accepted (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=y)" or "refused (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=n)"))
    local unpriv = feats.mask & (1 << 5) ~= 0
    local max = read("/sys/module/ublk_drv/parameters/ublks_max")
    check("unprivileged", true, unpriv and ("unprivileged devices supported, at most %s at a time (ublk_drv ublks_max); /dev/ublk-control must be opened to the user by a udev rule"):format(max or "?")
      or "this kernel cannot create unprivileged devices")
    check("limits", true, ("devices: ids 0..%d for root%s; queues 1..%d; depth 1..%d; I/O size up to %d MiB"):format(
      (1 << 20) - 1, max and (", " .. max .. " unprivileged") or "", core.const.MAX_NR_QUEUES,
      core.const.MAX_QUEUE_DEPTH, core.const.MAX_IO_BUF_BYTES >> 20))
  elseif ctl and ferrno == core.errno.EOPNOTSUPP then
    -- Linux 6.0 to 6.4: no GET_FEATURES, and only the legacy opcodes, which the library falls back to
    check("features", true, "GET_FEATURES is missing (Linux < 6.5): devices can be made, with the legacy opcodes, "
      .. "but the kernel's features cannot be listed and feature flags cannot be checked")
    check("opcodes", true, "only legacy opcodes (this kernel predates UBLK_F_CMD_IOCTL_ENCODE)")
  else
    check("features", false, fmsg or "not checked: the control device cannot be opened")
  end

  local ok = true
  for _, c in ipairs(checks) do ok = ok and c.ok end
  return { ok = ok, checks = checks, release = release }
end

return M
