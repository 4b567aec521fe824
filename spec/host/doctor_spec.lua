-- `ublk doctor` on kernels and systems the VM does not boot. Its verdicts come from what the library
-- reads: a stand-in for the public module and a control node that opens (/dev/null) play Linux 6.0 to
-- 6.4, whose ublk has no GET_FEATURES and only the legacy opcodes; a fake probe (doctor.run's third
-- argument) plays the rest: releases, sysctls, the process's ids, device counts, udev rules, mount
-- namespaces.
local run = require("support.run")
local doctor = require("ublk.doctor")

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

local ROOT = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t000001ffffffffff"
local USER = "Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t1000 27\nCapEff:\t0000000000000000"
local UDEV_RULE = [[
KERNEL=="ublk-control", MODE="0666", OPTIONS+="static_node=ublk-control"
ACTION=="add",KERNEL=="ublk[bc]*",RUN+="/usr/local/sbin/ublk_chown.sh %k 'add' '%M' '%m'"
]]

-- A healthy Debian 7.3 system, root, ublk_drv loaded, no device; `sys` changes it: `files` (path ->
-- contents, false for absent), `dirs` (path -> names), `ns` (pid -> mount namespace inode),
-- `devices` (ublk.list()), `mask` (GET_FEATURES), `modinfo`.
local function system(sys)
  sys = sys or {}
  local files = {
    ["/proc/sys/kernel/osrelease"] = "7.3.4+deb13-amd64",
    ["/proc/sys/kernel/io_uring_disabled"] = "0",
    ["/proc/sys/kernel/io_uring_group"] = "-1",
    ["/proc/self/status"] = "Name:\tlua5.4\n" .. ROOT .. "\n",
    ["/proc/self/uid_map"] = "         0          0 4294967295",
    ["/proc/self/mountinfo"] = "35 32 0:9 / /dev rw,relatime - devtmpfs dev rw,size=1995772k",
    ["/sys/module/ublk_drv"] = "",
    ["/sys/module/ublk_drv/parameters/ublks_max"] = "64",
    ["/etc/group"] = "root:x:0:\nsudo:x:27:alice\nuring:x:1001:alice\n",
    ["/etc/os-release"] = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\n',
    ["/proc/1/comm"] = "systemd",
  }
  for k, v in pairs(sys.files or {}) do files[k] = v or nil end
  local dirs = { ["/proc"] = { "1", "4242" }, ["/sys/class/ublk-char"] = {} }
  for k, v in pairs(sys.dirs or {}) do dirs[k] = v end
  local ns = { [1] = 4026531841, [4242] = 4026531841 }
  for k, v in pairs(sys.ns or {}) do ns[k] = v or nil end
  local probe = {
    read = function(path) return files[path] end,
    exists = function(path) return files[path] ~= nil or dirs[path] ~= nil end,
    list = function(dir) return dirs[dir] end,
    mnt_ns = function(pid) return ns[pid] end,
    pid = function() return 4242 end,
    modinfo = function() return sys.modinfo end,
    open_control = function() return { close = function() end } end,
    ring = function() return { uring_cmd = true, last_op = 64 } end,
  }
  local ublk = {
    features = function()
      return { mask = sys.mask or 0x1fffff, names = { "unprivileged_dev" }, ioctl_encode = true, legacy_opcodes = true }
    end,
    list = function() return sys.devices or {} end,
  }
  local r = doctor.run(ublk, {}, probe)
  local by = {}
  for _, c in ipairs(r.checks) do by[c.name] = c end
  return by, r
end

-- Check c has this level (and the ok that goes with it) and this detail, or a detail that matches.
local function is(c, level, detail)
  assert.are.equal(level, c.level, c.detail)
  assert.are.equal(level ~= "fail", c.ok)
  assert.are.equal(detail, c.detail)
end
local function like(c, level, pattern)
  assert.are.equal(level, c.level, c.detail)
  assert.are.equal(level ~= "fail", c.ok)
  assert.matches(pattern, c.detail)
end

-- The check `name` on the system `sys` (as for system()), and the whole result.
local function check_of(sys, name)
  local by, r = system(sys)
  return by[name], r
end

-- The check `name` on a system running `release` (files: more to change), and the whole result.
local function on_release(release, name, files)
  files = files or {}
  files["/proc/sys/kernel/osrelease"] = release
  return check_of({ files = files }, name)
end

-- n devices, the first `unpriv` of them created unprivileged
local function devices(n, unpriv)
  local names, list = {}, {}
  for i = 0, n - 1 do
    names[#names + 1] = "ublkc" .. i
    list[#list + 1] = { id = i, flags_mask = i < unpriv and (1 << 5) | (1 << 6) or (1 << 6) }
  end
  return names, list
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

  it("passes a healthy 7.3 system with every check ok, and gives each a level", function()
    local by, r = system()
    assert.is_true(r.ok)
    for name, c in pairs(by) do
      assert.are.equal("ok", c.level, name .. ": " .. c.detail)
      assert.is_true(c.ok)
    end
  end)

  describe("device limit (ublks_max)", function()
    it("says ublks_max counts only unprivileged devices on 7.3, and that root's do not count", function()
      local names, list = devices(3, 1)
      local c = system { dirs = { ["/sys/class/ublk-char"] = names }, devices = list }["device limit"]
      is(c, "ok", "ublks_max = 64 limits unprivileged devices only (UBLK_F_UNPRIVILEGED_DEV, created without "
          .. "CAP_SYS_ADMIN; 80bdfbb3545b: Linux 6.15, 6.14.9, 6.12.31): 1 of 64 exist (ublk devices in all: 3); "
          .. "devices created with CAP_SYS_ADMIN do not count")
    end)

    it("fails an unprivileged process once ublks_max unprivileged devices exist, and only warns root", function()
      local names, list = devices(66, 64)
      local sys = { dirs = { ["/sys/class/ublk-char"] = names }, devices = list,
        files = { ["/proc/self/status"] = USER } }
      local c, r = check_of(sys, "device limit")
      assert.is_false(r.ok)
      like(c, "fail", "^ublks_max = 64 limits unprivileged devices only .*: 64 of 64 exist %(ublk devices in all: 66%); "
          .. "devices created with CAP_SYS_ADMIN do not count; an unprivileged ADD_DEV, as this process makes, "
          .. "fails with EACCES: delete some %(ublk list, ublk del ID%), or raise the limit as root: echo 128 > "
          .. "/sys/module/ublk_drv/parameters/ublks_max$")
      sys.files["/proc/self/status"] = ROOT
      c = system(sys)["device limit"]
      like(c, "warn", "^ublks_max = 64 .*; this process has CAP_SYS_ADMIN and is not limited, but an unprivileged "
          .. "one gets EACCES from ADD_DEV: delete some")
    end)

    it("warns near the limit", function()
      local names, list = devices(60, 60)
      local c = system { dirs = { ["/sys/class/ublk-char"] = names }, devices = list,
        files = { ["/proc/self/status"] = USER } }["device limit"]
      like(c, "warn", "60 of 64 exist.*; an unprivileged ADD_DEV fails with EACCES once 64 exist: delete some")
    end)

    it("counts every device, root's too, on a release before 80bdfbb3545b, and fails at the limit", function()
      local names = devices(64, 0)
      local c = system { files = { ["/proc/sys/kernel/osrelease"] = "6.12.20-amd64" },
        dirs = { ["/sys/class/ublk-char"] = names } }["device limit"]
      is(c, "fail", "ublks_max = 64 limits every ublk device, root's too (before 80bdfbb3545b (Linux 6.15, 6.14.9, "
          .. "6.12.31)): 64 of 64 exist; ADD_DEV fails with EACCES until one is deleted: delete some (ublk list, "
          .. "ublk del ID), or raise the limit as root: echo 128 > /sys/module/ublk_drv/parameters/ublks_max")
    end)

    it("believes the module's own description over the release", function()
      local c = system { files = { ["/proc/sys/kernel/osrelease"] = "6.6.50" },
        modinfo = "ublks_max:max number of unprivileged ublk devices allowed to add(default: 64) (uint)" }["device limit"]
      assert.matches("^ublks_max = 64 limits unprivileged devices only %(UBLK_F_UNPRIVILEGED_DEV, created without "
          .. "CAP_SYS_ADMIN; its module description says so%)", c.detail)
    end)
  end)

  describe("io_uring sysctl", function()
    local function sysctl(status, disabled, group, extra)
      local files = { ["/proc/self/status"] = status, ["/proc/sys/kernel/io_uring_disabled"] = disabled,
        ["/proc/sys/kernel/io_uring_group"] = group }
      for k, v in pairs(extra or {}) do files[k] = v end
      return check_of({ files = files }, "io_uring sysctl")
    end

    it("passes a member of kernel.io_uring_group with io_uring_disabled = 1", function()
      local c = sysctl(USER:gsub("Groups:\t1000 27", "Groups:\t1000 27 1001"), "1", "1001")
      is(c, "ok", "kernel.io_uring_disabled = 1: only CAP_SYS_ADMIN and members of kernel.io_uring_group may use "
          .. "io_uring (kernel.io_uring_group = 1001 (uring)); this process (uid 1000, groups 1000 27 1001) may: "
          .. "it is in group 1001")
    end)

    it("fails a process outside the group with io_uring_disabled = 1, and says how to let it in", function()
      local c, r = sysctl(USER, "1", "1001")
      assert.is_false(r.ok)
      is(c, "fail", "kernel.io_uring_disabled = 1: only CAP_SYS_ADMIN and members of kernel.io_uring_group may use "
          .. "io_uring (kernel.io_uring_group = 1001 (uring)); this process (uid 1000, groups 1000 27) may not: "
          .. "run as root, or add the user to group uring (usermod -aG uring USER, then log in again), or let one "
          .. "of its groups in (sysctl -w kernel.io_uring_group=1000), or sysctl -w kernel.io_uring_disabled=0 (as "
          .. "root; persist it in /etc/sysctl.d/)")
    end)

    it("passes root with io_uring_disabled = 1 and no group, and names RHEL where it helps", function()
      local c = sysctl(ROOT, "1", "-1")
      like(c, "ok", "%(kernel.io_uring_group = %-1, no group%); this process %(uid 0, groups 0%) may: it has CAP_SYS_ADMIN$")
      c = sysctl(USER, "1", "-1", { ["/etc/os-release"] = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nVERSION_ID="10.0"\n' })
      like(c, "fail", "may not %(RHEL 10 and its rebuilds ship io_uring disabled for most users: this sysctl is why%): run "
          .. "as root, or let one of its groups in")
    end)

    it("fails everyone with io_uring_disabled = 2", function()
      local c = sysctl(ROOT, "2", "-1")
      is(c, "fail", "kernel.io_uring_disabled = 2: io_uring is off for every process, root included, so ublk cannot work: "
          .. "sysctl -w kernel.io_uring_disabled=0 (as root; persist it in /etc/sysctl.d/)")
    end)

    it("does not count CAP_SYS_ADMIN held in a user namespace", function()
      local c = sysctl(ROOT, "1", "-1", { ["/proc/self/uid_map"] = "0 100000 65536" })
      like(c, "fail", "may not: its CAP_SYS_ADMIN is in a user namespace, and the kernel asks for it in the initial one")
    end)
  end)

  describe("ADD_DEV bug", function()
    it("fails stable 6.18.4 and 6.18.5, which took the NUMA change without its prerequisite", function()
      for _, release in ipairs { "6.18.4", "6.18.5-arch1-1" } do
        local c, r = on_release(release, "ADD_DEV bug")
        assert.is_false(r.ok)
        is(c, "fail", ("Linux %s: stable 6.18.4 and 6.18.5 took 529d4d632788 (ublk: NUMA-aware memory allocation) without "
            .. "its prerequisite 011af85ccd87 (reorder tag_set initialization before queue allocation): the first "
            .. "ADD_DEV oopses on a NULL pointer in ublk_init_queues and later control commands hang until a reboot; "
            .. "unless this build carries 011af85ccd87, boot 6.18.6 or later (it has the fix) or 6.18.3 or earlier"):format(release))
      end
    end)

    it("passes 6.18.6 and 6.18.3", function()
      for _, release in ipairs { "6.18.6", "6.18.3" } do
        local c = on_release(release, "ADD_DEV bug")
        is(c, "ok", ("Linux %s is not a release known to break ADD_DEV (stable 6.18.4 and 6.18.5; some Ubuntu 6.17 builds, unverified)"):format(release))
      end
    end)

    it("warns on Ubuntu 6.17, saying the affected builds are not verified and how to tell", function()
      local c = on_release("6.17.0-35-generic", "ADD_DEV bug",
        { ["/proc/version_signature"] = "Ubuntu 6.17.0-35.35~24.04.1-generic 6.17.9" })
      is(c, "warn", "Ubuntu 6.17.0-35.35~24.04.1-generic 6.17.9: some Ubuntu 6.17 builds are reported to have "
          .. "taken 529d4d632788 (ublk: NUMA-aware memory allocation) without 011af85ccd87 (ublk: reorder tag_set "
          .. "initialization before queue allocation), so that ADD_DEV oopses; which builds is not verified here "
          .. "(Ubuntu's changelogs are not in the kernel's history): this one is affected if `apt changelog "
          .. "linux-image-6.17.0-35-generic` lists the first and not the second")
    end)
  end)

  describe("restart", function()
    it("warns that 6.12 does not start a stopped device again", function()
      local c = on_release("6.12.95+deb12-amd64", "restart")
      is(c, "warn", "Linux 6.12.95+deb12-amd64: a stopped device cannot be started again: its queues keep the "
          .. "first server's task, so new FETCH_REQs fail with EINVAL (seen on 6.12) until 728cbac5fe21 (Linux "
          .. "6.15, 6.14.6): delete the device and create a new one")
    end)

    it("says 7.3 serves a stopped device again, and releases between most likely do", function()
      assert.are.equal("Linux 7.3.4+deb13-amd64: a stopped device can be started again (dev:start() after dev:stop(); 7.3 serves it)", system().restart.detail)
      local c = on_release("6.16.3", "restart")
      like(c, "ok", "^Linux 6.16.3: a stopped device can most likely be started again: this release has 728cbac5fe21 .*only 6.12 and 7.3 are tested$")
    end)
  end)

  describe("unprivileged devices and udev rules", function()
    it("names the udev rule that gives the device nodes to their owner", function()
      local c = system { dirs = { ["/etc/udev/rules.d"] = { "99-ublk-dev.rules", "70-other.rules" } },
        files = { ["/etc/udev/rules.d/99-ublk-dev.rules"] = UDEV_RULE, ["/etc/udev/rules.d/70-other.rules"] = "# ublkc\n" } }.unprivileged
      is(c, "ok", "UBLK_F_UNPRIVILEGED_DEV supported; a udev rule gives /dev/ublkcN and /dev/ublkbN to their device's "
          .. "owner (/etc/udev/rules.d/99-ublk-dev.rules); /dev/ublk-control has a rule "
          .. "(/etc/udev/rules.d/99-ublk-dev.rules)")
    end)

    it("says what a missing rule means: fine for root, a warning for a user", function()
      local missing = "UBLK_F_UNPRIVILEGED_DEV supported; no udev rule gives /dev/ublkcN and /dev/ublkbN to their device's "
          .. "owner (none in /etc/udev/rules.d, /lib/udev/rules.d, /usr/lib/udev/rules.d mentions them): for root "
          .. "that is fine (its devices are root's); an unprivileged user's device nodes stay root's and it cannot "
          .. "serve them: install a rule such as ublksrv's 99-ublk-dev.rules"
      local c = system().unprivileged
      is(c, "ok", missing)
      c = system { files = { ["/proc/self/status"] = USER } }.unprivileged
      is(c, "warn", missing)
    end)

    it("fails a user on a kernel without UBLK_F_UNPRIVILEGED_DEV", function()
      local c = system { mask = 0x1de, files = { ["/proc/self/status"] = USER } }.unprivileged
      is(c, "fail", "this kernel has no UBLK_F_UNPRIVILEGED_DEV: only CAP_SYS_ADMIN creates devices, and this process lacks it: run as root")
    end)
  end)

  describe("mount namespace", function()
    it("passes a process in PID 1's and udevd's mount namespace", function()
      local c = system { dirs = { ["/proc"] = { "1", "317", "4242", "self" } }, files = { ["/proc/317/comm"] = "systemd-udevd" },
        ns = { [317] = 4026531841 } }["mount namespace"]
      is(c, "ok", "this process (mnt:[4026531841]) shares the mount namespace of PID 1 and udevd (pid 317): the "
          .. "/dev/ublkcN and /dev/ublkbN the kernel creates appear in its /dev")
    end)

    it("warns in another mount namespace whose /dev is not devtmpfs", function()
      local sys = { dirs = { ["/proc"] = { "1", "317", "4242" } }, files = { ["/proc/317/comm"] = "systemd-udevd",
        ["/proc/self/mountinfo"] = "600 590 0:80 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755" },
        ns = { [1] = 4026531841, [317] = 4026531841, [4242] = 4026532500 } }
      local c, r = check_of(sys, "mount namespace")
      assert.is_true(r.ok)
      is(c, "warn", "this process is in another mount namespace (mnt:[4026532500]) than PID 1's "
          .. "mnt:[4026531841], udevd (pid 317)'s mnt:[4026531841] and its /dev is tmpfs, not devtmpfs (a "
          .. "container's own /dev): the /dev/ublkcN and /dev/ublkbN the kernel creates may not appear in it, and "
          .. "dev:start() then waits for them in vain: run in the host's mount namespace (nsenter -t 1 -m), or "
          .. "bind-mount the host's /dev (docker run -v /dev:/dev), or mount devtmpfs on /dev")
      sys.files["/proc/self/mountinfo"] = "600 590 0:6 / /dev rw - devtmpfs udev rw"
      c = system(sys)["mount namespace"]
      like(c, "ok", ", but its /dev is devtmpfs, where the kernel's /dev/ublkcN and /dev/ublkbN appear too$")
    end)

    it("says so when PID 1's namespace cannot be read", function()
      local c = system { ns = { [1] = false } }["mount namespace"]
      is(c, "ok", "not compared: PID 1's mount namespace cannot be read here (run as root to compare)")
    end)
  end)
end)
