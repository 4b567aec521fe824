--- `ublk doctor`: what the running kernel supports for ublk, and why not. Each check has a one-line
-- verdict and, when it fails or warns, the fix.
--
-- A check's `level` is "ok", "warn" (`ok` stays true: devices can be created, but its detail says
-- what to watch; `ublk doctor` prints WARN) or "fail" (`ok` false: devices cannot be
-- created here). Everything the doctor reads comes through a probe (M.probe), which a spec replaces.
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

-- The lines a command prints, or nil when it printed nothing.
local function lines_of(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return #out > 0 and out or nil
end

--- The doctor's inputs, one function each. `doctor.run(ublk, state, probe)` takes a table with any
-- of them replaced.
M.probe = {
  --- A file's contents without trailing white space, or nil when it cannot be read.
  read = read,
  --- Whether a path exists.
  exists = function(path) return core.exists(path) end,
  --- The names in a directory, sorted, or nil when it cannot be listed.
  list = function(dir)
    if not core.exists(dir) then return nil end
    return lines_of("ls -1 '" .. dir:gsub("'", "'\\''") .. "'") or {}
  end,
  --- The inode of a process's mount namespace (the N of /proc/PID/ns/mnt -> mnt:[N]), or nil.
  mnt_ns = function(pid)
    local out = lines_of(("readlink /proc/%d/ns/mnt"):format(pid))
    return out and tonumber(out[1]:match("^mnt:%[(%d+)%]$"))
  end,
  --- This process's id.
  pid = core.getpid,
  --- ublk_drv's parameters as `modinfo -F parm ublk_drv` describes them, or nil.
  modinfo = function()
    local out = lines_of("modinfo -F parm ublk_drv")
    return out and table.concat(out, "\n")
  end,
  --- /dev/ublk-control (or $UBLK_CONTROL) opened read-write: handle | nil, msg, errno.
  open_control = core.open_control,
  --- A 128-byte-SQE ring and IORING_OP_URING_CMD: { uring_cmd =, last_op = } | nil, msg.
  ring = core.probe_ring,
}

-- "7.3.4+deb13-amd64" -> 7, 3, 4 (a missing part is 0).
local function version(release)
  local a, b, c = release:match("^(%d+)%.(%d+)%.?(%d*)")
  return tonumber(a) or 0, tonumber(b) or 0, tonumber(c) or 0
end

-- Whether release a.b.c is at least x.y.z.
local function at_least(v, x, y, z)
  if v[1] ~= x then return v[1] > x end
  if v[2] ~= y then return v[2] > y end
  return v[3] >= (z or 0)
end

-- Where this kernel keeps its modules, and whether ublk_drv is one of them or built in.
local function module_state(p, release)
  if p.exists("/sys/module/ublk_drv") then return "loaded" end
  for _, base in ipairs { "/lib/modules/", "/usr/lib/modules/" } do
    local dir = base .. release
    local builtin = p.read(dir .. "/modules.builtin")
    if builtin and builtin:find("ublk_drv.ko", 1, true) then return "builtin" end
    local dep = p.read(dir .. "/modules.dep")
    if dep and dep:find("ublk_drv.ko", 1, true) then return "available" end
  end
  local config = p.read("/boot/config-" .. release) or ""
  if config:find("CONFIG_BLK_DEV_UBLK=m", 1, true) then return "available" end
  if config:find("CONFIG_BLK_DEV_UBLK=y", 1, true) then return "builtin" end
  return "missing"
end

-- Who this process is, from /proc/self/status: uid, fsgid, the supplementary groups, and whether the
-- kernel's capable(CAP_SYS_ADMIN) holds (it is checked in the initial user namespace, so a process
-- in another one has it only there).
local function identity(p)
  local status = "\n" .. (p.read("/proc/self/status") or "")
  local uid = tonumber(status:match("\nUid:%s+%d+%s+(%d+)"))
  local fsgid = tonumber(status:match("\nGid:%s+%d+%s+%d+%s+%d+%s+(%d+)"))
  local groups = {}
  for g in (status:match("\nGroups:([^\n]*)") or ""):gmatch("%d+") do groups[#groups + 1] = tonumber(g) end
  local capeff = tonumber(status:match("\nCapEff:%s+(%x+)") or "0", 16) or 0
  local uid_map = (p.read("/proc/self/uid_map") or "0 0 4294967295"):gsub("%s+", " "):gsub("^ ", "")
  local userns = uid_map ~= "0 0 4294967295"
  return { uid = uid, fsgid = fsgid, groups = groups, userns = userns,
    admin = capeff & (1 << 21) ~= 0 and not userns }
end

-- in_group_p(): the fsgid or a supplementary group.
local function in_group(id, gid)
  if id.fsgid == gid then return true end
  for _, g in ipairs(id.groups) do if g == gid then return true end end
  return false
end

-- A group's name from /etc/group, or nil.
local function group_name(p, gid)
  for line in ((p.read("/etc/group") or "") .. "\n"):gmatch("([^\n]*)\n") do
    local name, id = line:match("^([^:]+):[^:]*:(%d+):")
    if id and tonumber(id) == gid then return name end
  end
end

-- "uid 1000, groups 1000 27" (the supplementary groups, or the fsgid when there are none).
local function who(id)
  local groups = #id.groups > 0 and id.groups or { id.fsgid }
  local g = {}
  for i, v in ipairs(groups) do g[i] = tostring(v) end
  return ("uid %s, groups %s"):format(tostring(id.uid or "?"), #g > 0 and table.concat(g, " ") or "none")
end

local function rhel_like(p)
  local os = p.read("/etc/os-release") or ""
  local ids = (os:match("\nID=\"?([^\"\n]*)") or os:match("^ID=\"?([^\"\n]*)") or "") .. " "
    .. (os:match("\nID_LIKE=\"?([^\"\n]*)") or "")
  return ids:find("rhel", 1, true) or ids:find("centos", 1, true) or ids:find("fedora", 1, true)
end

-- kernel.io_uring_disabled and kernel.io_uring_group (io_uring_allowed() in io_uring/io_uring.c):
-- 0 lets everyone use io_uring; 1 only CAP_SYS_ADMIN and members of the group (fsgid or a
-- supplementary group; -1, the default, is no group); 2 no one.
local function io_uring_check(p, id)
  local disabled = p.read("/proc/sys/kernel/io_uring_disabled")
  local dis = tonumber(disabled or "0")
  local rhel = rhel_like(p)
    and " (RHEL 10 and its rebuilds ship io_uring disabled for most users: this sysctl is why)" or ""
  local open_all = "sysctl -w kernel.io_uring_disabled=0 (as root; persist it in /etc/sysctl.d/)"
  if not disabled then
    return "ok", "kernel.io_uring_disabled is absent (Linux before 6.6): io_uring is open to every process"
  elseif dis == 0 then
    return "ok", "kernel.io_uring_disabled = 0: io_uring is open to every process"
  elseif dis == 2 then
    return "fail", "kernel.io_uring_disabled = 2: io_uring is off for every process, root included, so ublk cannot work"
      .. rhel .. ": " .. open_all
  elseif dis ~= 1 then
    return "fail", ("kernel.io_uring_disabled = %s: not a value this doctor knows"):format(disabled)
  end
  local gid = tonumber(p.read("/proc/sys/kernel/io_uring_group") or "-1") or -1
  local name = gid >= 0 and group_name(p, gid)
  local group = gid < 0 and "kernel.io_uring_group = -1, no group"
    or ("kernel.io_uring_group = %d%s"):format(gid, name and (" (" .. name .. ")") or "")
  local head = ("kernel.io_uring_disabled = 1: only CAP_SYS_ADMIN and members of kernel.io_uring_group may use io_uring "
    .. "(%s); this process (%s) "):format(group, who(id))
  if id.admin then return "ok", head .. "may: it has CAP_SYS_ADMIN" end
  if gid >= 0 and in_group(id, gid) then return "ok", head .. ("may: it is in group %d"):format(gid) end
  local fix = gid >= 0
    and ("add the user to group %s (usermod -aG %s USER, then log in again), or "):format(name or gid, name or gid) or ""
  local mine = #id.groups > 0 and id.groups[1] or id.fsgid
  return "fail", head .. (id.userns and "may not: its CAP_SYS_ADMIN is in a user namespace, and the kernel asks for it in the initial one" or "may not")
    .. rhel .. ": run as root, or " .. fix .. ("let one of its groups in (sysctl -w kernel.io_uring_group=%s), or "):format(mine or "GID")
    .. open_all
end

-- What ublks_max counts. 80bdfbb3545b "ublk: enforce ublks_max only for unprivileged devices"
-- (Linux 6.15; stable 6.14.9 and 6.12.31, from their review series) made it count only devices
-- created with UBLK_F_UNPRIVILEGED_DEV (ublk_ctrl_add_dev: -EACCES once that many exist; a caller
-- with CAP_SYS_ADMIN has the flag cleared and is limited only by the 2^20 ids). Before it, from
-- 403ebc877832 (which added the parameter), it counted every device. The module's own description
-- says which ("max number of unprivileged ublk devices allowed to add"); without modinfo, the
-- release does.
local function ublks_max_scope(p, v)
  local parm = p.modinfo()
  local desc = parm and parm:match("ublks_max:([^\n]*)")
  if desc then
    return desc:find("unprivileged", 1, true) and "unprivileged" or "all", "its module description says so"
  end
  local unpriv = at_least(v, 6, 15) or (v[1] == 6 and v[2] == 14 and v[3] >= 9)
    or (v[1] == 6 and v[2] == 12 and v[3] >= 31)
  return unpriv and "unprivileged" or "all",
    unpriv and "80bdfbb3545b: Linux 6.15, 6.14.9, 6.12.31" or "before 80bdfbb3545b (Linux 6.15, 6.14.9, 6.12.31)"
end

local function device_limit_check(p, ublk, ctl, mod, v, id)
  if mod ~= "loaded" then return "ok", "not checked: ublk_drv is not loaded" end
  local max = tonumber(p.read("/sys/module/ublk_drv/parameters/ublks_max") or "")
  local names = p.list("/sys/class/ublk-char") or {}
  local total = 0
  for _, n in ipairs(names) do if n:match("^ublkc%d+$") then total = total + 1 end end
  if not max then
    return "ok", ("ublk_drv has no ublks_max parameter: devices are limited only by their 1048576 ids (%d exist)"):format(total)
  end
  local scope, why = ublks_max_scope(p, v)
  local fix = ("delete some (ublk list, ublk del ID), or raise the limit as root: "
    .. "echo %d > /sys/module/ublk_drv/parameters/ublks_max"):format(math.max(2 * max, 64))
  local near = math.max(1, max // 10)
  if scope == "all" then
    local head = ("ublks_max = %d limits every ublk device, root's too (%s): %d of %d exist"):format(max, why, total, max)
    if total >= max then return "fail", head .. "; ADD_DEV fails with EACCES until one is deleted: " .. fix end
    if total >= max - near then return "warn", head .. "; ADD_DEV fails with EACCES once " .. max .. " exist: " .. fix end
    return "ok", head
  end
  -- only the unprivileged ones count: those whose flags have UBLK_F_UNPRIVILEGED_DEV (bit 5)
  local unpriv = total == 0 and 0 or nil
  if not unpriv and ctl and ublk.list then
    local devs = ublk.list()
    if devs then
      unpriv = 0
      for _, d in ipairs(devs) do if (d.flags_mask or 0) & (1 << 5) ~= 0 then unpriv = unpriv + 1 end end
    end
  end
  local counted = unpriv or total
  local head = ("ublks_max = %d limits unprivileged devices only (UBLK_F_UNPRIVILEGED_DEV, created without CAP_SYS_ADMIN; "
    .. "%s): %s of %d exist (ublk devices in all: %d); devices created with CAP_SYS_ADMIN do not count"):format(
    max, why, unpriv and tostring(unpriv) or ("at most " .. total), max, total)
  if counted < max - near then return "ok", head end
  if unpriv == nil then
    return "warn", head .. "; which of them are unprivileged could not be read (GET_DEV_INFO), "
      .. "and an unprivileged ADD_DEV fails with EACCES once " .. max .. " are: " .. fix
  end
  local full = counted >= max
  if id.admin then
    return "warn", head .. ("; this process has CAP_SYS_ADMIN and is not limited, but an unprivileged one %s: "):format(
      full and "gets EACCES from ADD_DEV" or "soon gets EACCES from ADD_DEV") .. fix
  end
  if full then return "fail", head .. "; an unprivileged ADD_DEV, as this process makes, fails with EACCES: " .. fix end
  return "warn", head .. "; an unprivileged ADD_DEV fails with EACCES once " .. max .. " exist: " .. fix
end

-- Releases known to break ADD_DEV. 529d4d632788 "ublk: implement NUMA-aware memory allocation"
-- (mainline 6.19) needs 011af85ccd87 "ublk: reorder tag_set initialization before queue allocation"
-- (6.19, just before it): without it, ublk_init_queues() reads the tag set's CPU map before
-- ublk_add_tag_set() allocated it, a NULL pointer, and the oops leaves ublk_ctl_mutex held.
-- Stable 6.18.4 took the NUMA change (stable commit 92f024b8d47a, as a dependency of 7fc4da6a304b
-- "ublk: scan partition in async way") without the reorder; 6.18.5 (dc554c8fb361) has no ublk
-- change; 6.18.6 took the reorder (stable commit a1d420370a24; "Linux 6.18.6" is b6fe42bc55af).
-- Ubuntu's 6.17 kernels are reported (AgentENV issue 20, Launchpad bug 2154635) to have taken the
-- NUMA change without the reorder in some builds; their changelogs are not in the kernel's history,
-- so which builds is not verified here and the verdict only points at the changelog.
local function add_dev_bug_check(p, release, v)
  local sig = p.read("/proc/version_signature") or ""
  local ubuntu = sig:match("^Ubuntu") or (p.read("/proc/version") or ""):find("Ubuntu", 1, true)
  if v[1] == 6 and v[2] == 18 and (v[3] == 4 or v[3] == 5) then
    return "fail", ("Linux %s: stable 6.18.4 and 6.18.5 took 529d4d632788 (ublk: NUMA-aware memory allocation) "
      .. "without its prerequisite 011af85ccd87 (reorder tag_set initialization before queue allocation): "
      .. "the first ADD_DEV oopses on a NULL pointer in ublk_init_queues and later control commands hang until a reboot; "
      .. "unless this build carries 011af85ccd87, boot 6.18.6 or later (it has the fix) or 6.18.3 or earlier"):format(release)
  end
  if ubuntu and v[1] == 6 and v[2] == 17 then
    return "warn", ("%s: some Ubuntu 6.17 builds are reported to have taken 529d4d632788 (ublk: NUMA-aware memory allocation) "
      .. "without 011af85ccd87 (ublk: reorder tag_set initialization before queue allocation), so that ADD_DEV oopses; "
      .. "which builds is not verified here (Ubuntu's changelogs are not in the kernel's history): "
      .. "this one is affected if `apt changelog linux-image-%s` lists the first and not the second"):format(
      sig ~= "" and sig or ("Ubuntu " .. release), release)
  end
  return "ok", ("Linux %s is not a release known to break ADD_DEV (stable 6.18.4 and 6.18.5; some Ubuntu 6.17 builds, unverified)"):format(release)
end

-- START_DEV after STOP_DEV. On 6.12 a queue keeps the task that fetched first (ubq->ubq_daemon) until
-- the device is deleted or recovered, and __ublk_ch_uring_cmd() refuses FETCH_REQ from any other task
-- with -EINVAL (and from the same one with -EBUSY: the queue is still "ready"). 728cbac5fe21 "ublk:
-- move device reset into ublk_ch_release()" (Linux 6.15, block-6.15; stable 6.14.6, from its review
-- series) resets every queue when /dev/ublkcN is closed, which lua-ublk does at dev:stop(): that is
-- the change that lets a stopped device be served again, read from the code; only 6.12 (refuses) and
-- 7.3 (serves) are run (spec/kernel/serve_spec.lua).
local function restart_check(release, v)
  if at_least(v, 7, 3) then
    return "ok", ("Linux %s: a stopped device can be started again (dev:start() after dev:stop(); 7.3 serves it)"):format(release)
  end
  if at_least(v, 6, 15) or (v[1] == 6 and v[2] == 14 and v[3] >= 6) then
    return "ok", ("Linux %s: a stopped device can most likely be started again: this release has 728cbac5fe21 "
      .. "(ublk: move device reset into ublk_ch_release(); Linux 6.15, 6.14.6), which 7.3's serving it again rests on; "
      .. "only 6.12 and 7.3 are tested"):format(release)
  end
  return "warn", ("Linux %s: a stopped device cannot be started again: its queues keep the first server's task, "
    .. "so new FETCH_REQs fail with EINVAL (seen on 6.12) until 728cbac5fe21 (Linux 6.15, 6.14.6): "
    .. "delete the device and create a new one"):format(release)
end

-- The udev rules that mention ublk: those for the per-device nodes and those for /dev/ublk-control.
local function udev_rules(p)
  local nodes, ctl = {}, {}
  for _, dir in ipairs { "/etc/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d" } do
    for _, name in ipairs(p.list(dir) or {}) do
      if name:match("%.rules$") then
        local path = dir .. "/" .. name
        for line in ((p.read(path) or "") .. "\n"):gmatch("([^\n]*)\n") do
          if not line:match("^%s*#") then
            if line:find("ublk%[") or line:find("ublkc") or line:find("ublkb") then nodes[path] = true end
            if line:find("ublk-control", 1, true) then ctl[path] = true end
          end
        end
      end
    end
  end
  local function sorted(t)
    local out = {}
    for k in pairs(t) do out[#out + 1] = k end
    table.sort(out)
    return table.concat(out, ", ")
  end
  return sorted(nodes), sorted(ctl)
end

-- Unprivileged devices: the kernel's UBLK_F_UNPRIVILEGED_DEV and the udev rules that make them
-- usable (the kernel creates /dev/ublkcN and /dev/ublkbN root's; a rule such as ublksrv's
-- 99-ublk-dev.rules gives them to the device's owner, and another opens /dev/ublk-control).
local function unprivileged_check(p, feats, ferrno, id)
  local nodes, ctl = udev_rules(p)
  local rules = (nodes ~= "" and ("a udev rule gives /dev/ublkcN and /dev/ublkbN to their device's owner (" .. nodes .. ")")
    or ("no udev rule gives /dev/ublkcN and /dev/ublkbN to their device's owner "
      .. "(none in /etc/udev/rules.d, /lib/udev/rules.d, /usr/lib/udev/rules.d mentions them)"))
    .. (ctl ~= "" and ("; /dev/ublk-control has a rule (" .. ctl .. ")") or "")
  local supported
  if feats then supported = feats.mask & (1 << 5) ~= 0 end
  if supported == false then
    if id.admin then
      return "ok", "this kernel has no UBLK_F_UNPRIVILEGED_DEV: only CAP_SYS_ADMIN creates devices, as this process may; " .. rules
    end
    return "fail", "this kernel has no UBLK_F_UNPRIVILEGED_DEV: only CAP_SYS_ADMIN creates devices, and this process lacks it: run as root"
  end
  local kernel = supported and "UBLK_F_UNPRIVILEGED_DEV supported"
    or ("whether the kernel has UBLK_F_UNPRIVILEGED_DEV is not known (%s)"):format(
      ferrno == core.errno.EOPNOTSUPP and "no GET_FEATURES; Linux 6.3 and later have it" or "GET_FEATURES not read")
  if nodes ~= "" then return "ok", kernel .. "; " .. rules end
  local meaning = "for root that is fine (its devices are root's); an unprivileged user's device nodes stay root's "
    .. "and it cannot serve them: install a rule such as ublksrv's 99-ublk-dev.rules"
  return id.admin and "ok" or "warn", kernel .. "; " .. rules .. ": " .. meaning
end

-- The mount point and type of the mount at `point` in /proc/self/mountinfo (the last one there wins).
local function fstype_at(p, point)
  local fstype
  for line in ((p.read("/proc/self/mountinfo") or "") .. "\n"):gmatch("([^\n]*)\n") do
    local mnt, rest = line:match("^%S+ %S+ %S+ %S+ (%S+) .- %- (%S+)")
    if mnt == point then fstype = rest end
  end
  return fstype
end

-- The udevd processes: /proc/PID/comm is systemd-udevd or udevd.
local function udevd_pids(p)
  local pids = {}
  for _, name in ipairs(p.list("/proc") or {}) do
    if name:match("^%d+$") then
      local comm = p.read("/proc/" .. name .. "/comm")
      if comm == "systemd-udevd" or comm == "udevd" then pids[#pids + 1] = tonumber(name) end
    end
  end
  table.sort(pids)
  return pids
end

-- Whether this process sees the /dev the kernel's device nodes appear in: the same mount namespace
-- as PID 1 and udevd, or a /dev that is devtmpfs (every devtmpfs mount is the one instance).
local function mount_ns_check(p)
  local self = p.mnt_ns(p.pid())
  if not self then return "ok", "not checked: /proc/self/ns/mnt cannot be read" end
  local refs, unread, others = { { "PID 1", 1 } }, {}, {}
  for _, pid in ipairs(udevd_pids(p)) do refs[#refs + 1] = { "udevd (pid " .. pid .. ")", pid } end
  local seen = {}
  for _, r in ipairs(refs) do
    local ns = p.mnt_ns(r[2])
    if not ns then unread[#unread + 1] = r[1]
    elseif ns ~= self then others[#others + 1] = ("%s's mnt:[%d]"):format(r[1], ns)
    else seen[#seen + 1] = r[1] end
  end
  local dev = fstype_at(p, "/dev")
  if #others == 0 then
    if #seen == 0 then
      return "ok", ("not compared: %s's mount namespace cannot be read here (run as root to compare)"):format(table.concat(unread, " and "))
    end
    return "ok", ("this process (mnt:[%d]) shares the mount namespace of %s: the /dev/ublkcN and /dev/ublkbN the kernel creates appear in its /dev"):format(
      self, table.concat(seen, " and ")) .. (#refs == 1 and " (no udevd process is visible)" or "")
  end
  local head = ("this process is in another mount namespace (mnt:[%d]) than %s"):format(self, table.concat(others, ", "))
  if dev == "devtmpfs" then
    return "ok", head .. ", but its /dev is devtmpfs, where the kernel's /dev/ublkcN and /dev/ublkbN appear too"
  end
  return "warn", head .. (" and its /dev is %s, not devtmpfs (a container's own /dev): "
    .. "the /dev/ublkcN and /dev/ublkbN the kernel creates may not appear in it, and dev:start() then waits for them in vain: "
    .. "run in the host's mount namespace (nsenter -t 1 -m), or bind-mount the host's /dev (docker run -v /dev:/dev), "
    .. "or mount devtmpfs on /dev"):format(dev or "not a mount of its own")
end

--- Run every check. `ublk` is the public module, `state` its internal state, `probe` (optional) a
-- table that replaces any of M.probe's functions.
-- @return { ok = bool, checks = { { name =, ok =, level = "ok"|"warn"|"fail", detail = }, ... }, release = }
function M.run(ublk, state, probe)
  local _ = state
  local p = {}
  for k, f in pairs(M.probe) do p[k] = f end
  for k, f in pairs(probe or {}) do p[k] = f end
  local checks = {}
  local function check(name, level, detail)
    if level == true then level = "ok" elseif level == false or level == nil then level = "fail" end
    checks[#checks + 1] = { name = name, ok = level ~= "fail", level = level, detail = detail }
    return level ~= "fail"
  end

  local release = p.read("/proc/sys/kernel/osrelease") or "unknown"
  local v = { version(release) }
  local major = v[1]
  check("kernel", major >= 6,
    ("Linux %s%s"):format(release, (major < 6) and ": ublk needs Linux 6.0 or newer" or ""))
  check("ADD_DEV bug", add_dev_bug_check(p, release, v))

  local mod = module_state(p, release)
  local mod_detail = ({
    loaded = "ublk_drv is loaded",
    builtin = "ublk is built into this kernel",
    available = "ublk_drv is available but not loaded: run `modprobe ublk_drv` as root",
    missing = ("this kernel (%s) has no ublk driver: it was built without CONFIG_BLK_DEV_UBLK and ships no ublk_drv module; "
      .. "boot a kernel that has it (Debian's 6.1+ kernels do), or run `make test`, which uses a VM"):format(release),
  })[mod]
  check("module", mod == "loaded" or mod == "builtin", mod_detail)

  local path = control.path()
  local ctl, ctl_msg, ctl_errno = p.open_control(path)
  if not ctl and ctl_errno == core.errno.ENOENT then
    ctl_msg = ("%s does not exist: %s"):format(path, mod == "missing" and "no ublk driver (see module)"
      or mod == "available" and "load the module: modprobe ublk_drv"
      or "the driver is there but the node is not: is devtmpfs mounted on /dev?")
  elseif not ctl then
    ctl_msg = ctl_msg .. " (run as root, or a udev rule must grant access)"
  end
  check("control", ctl ~= nil, ctl and (path .. " is present and opens read-write") or ctl_msg)
  if ctl then ctl:close() end

  local id = identity(p)
  check("io_uring sysctl", io_uring_check(p, id))

  local ring, ring_msg = p.ring()
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
      .. "; legacy opcodes " .. (feats.legacy_opcodes and "also accepted (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=y)"
        or "refused (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=n)"))
  elseif ctl and ferrno == core.errno.EOPNOTSUPP then
    -- Linux 6.0 to 6.4: no GET_FEATURES, and only the legacy opcodes, which the library falls back to
    check("features", true, "GET_FEATURES is missing (Linux < 6.5): devices can be made, with the legacy opcodes, "
      .. "but the kernel's features cannot be listed and feature flags cannot be checked")
    check("opcodes", true, "only legacy opcodes (this kernel predates UBLK_F_CMD_IOCTL_ENCODE)")
  else
    check("features", false, fmsg or "not checked: the control device cannot be opened")
  end
  if feats then
    check("limits", true, ("devices: ids 0..%d; queues 1..%d; depth 1..%d; I/O size up to %d MiB"):format(
      (1 << 20) - 1, core.const.MAX_NR_QUEUES, core.const.MAX_QUEUE_DEPTH, core.const.MAX_IO_BUF_BYTES >> 20))
  end
  check("device limit", device_limit_check(p, ublk, ctl, mod, v, id))
  check("unprivileged", unprivileged_check(p, feats, ctl and ferrno, id))
  check("restart", restart_check(release, v))
  check("mount namespace", mount_ns_check(p))

  local ok = true
  for _, c in ipairs(checks) do ok = ok and c.ok end
  return { ok = ok, checks = checks, release = release }
end

return M
