-- What the kernel specs do to a block device from the outside: shell commands that are not ours,
-- fio with verification, and an ext4 round trip.
local run = require("support.run")

local M = {}

--- What a command run by run.plain or job.lua gave: must have succeeded (a message with its output
-- otherwise); returns stdout.
function M.succeeded(cmd, code, out, err)
  assert(code == 0, ("`%s` failed (%d):\n%s%s"):format(cmd, code, out, err))
  return out
end

--- A shell command that is not ours (fio, mkfs, dd): must succeed; returns stdout.
function M.sh(cmd)
  return M.succeeded(cmd, run.plain(cmd))
end

--- The fio command that writes, reads back and checks every block (crc32c), failing on any
-- mismatch or error. o = { rw, bs ("4k" or "512-1m"), depth, jobs = 1, size = "16m" }; each job
-- works on its own `size` bytes.
function M.fio_command(path, o)
  local size = o.size or "16m"
  return table.concat({
    "fio --name=verify --filename=" .. path, "--direct=1 --ioengine=io_uring",
    "--rw=" .. o.rw, "--bsrange=" .. (o.bs:find("-") and o.bs or o.bs .. "-" .. o.bs), "--iodepth=" .. o.depth,
    "--numjobs=" .. (o.jobs or 1), "--size=" .. size, "--offset_increment=" .. size,
    "--verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting --output-format=terse --terse-version=3",
  }, " ")
end

--- Check fio's terse output: field 5 of the group's line is its error count.
function M.fio_ok(out)
  local fields = {}
  for f in (out:match("[^\n]*3;[^\n]*") or ""):gmatch("([^;]*);?") do fields[#fields + 1] = f end
  assert(fields[5] == "0", "fio reported errors:\n" .. out)
  return out
end

--- fio with verification, run here (the device is served by another thread or process).
function M.fio_verify(path, o)
  return M.fio_ok(M.sh(M.fio_command(path, o)))
end

--- mkfs (unless keep_fs), mount, write 8 MiB of random data and a copy of lua/, umount,
-- e2fsck -fn clean, mount read-only again: the same checksums. Returns them.
function M.ext4_round_trip(path, mnt, keep_fs)
  M.sh("mkdir -p " .. mnt .. (keep_fs and "" or (" && mkfs.ext4 -q -F " .. path)))
  M.sh(("mount %s %s && dd if=/dev/urandom of=%s/blob bs=1M count=8 2>/dev/null && cp -r lua %s/lua && sync"):format(
    path, mnt, mnt, mnt))
  local sum = M.sh(("cd %s && find . -type f | sort | xargs md5sum"):format(mnt))
  M.sh("umount " .. mnt)
  M.sh("e2fsck -fn " .. path)
  M.sh(("mount -o ro %s %s"):format(path, mnt))
  local again = M.sh(("cd %s && find . -type f | sort | xargs md5sum"):format(mnt))
  M.sh("umount " .. mnt)
  assert(sum == again, "the file system's contents changed across umount and mount:\n" .. sum .. "\n" .. again)
  assert(sum:find("blob", 1, true), sum)
  return sum
end

return M
