-- The CLI: exit 0 on success, 1 on a failure explained on stderr, 2 on misuse.
local run = require("support.run")

describe("ublk command line", function()
  it("prints help with --help and exits 0", function()
    local code, out = run.ublk("--help")
    assert.are.equal(0, code)
    assert.matches("usage: ublk COMMAND", out)
    for _, c in ipairs { "doctor", "features", "add", "recover", "list", "del", "decode" } do assert.matches("\n  " .. c, out) end
  end)

  it("prints each command's help", function()
    for _, c in ipairs { "doctor", "features", "add", "recover", "list", "del", "decode", "version" } do
      local code, out = run.ublk(c .. " --help")
      assert.are.equal(0, code, c)
      assert.matches("^usage: ublk " .. c, out)
    end
  end)

  local misuse = {
    { "", "usage: ublk COMMAND" },
    { "frobnicate", "ublk: unknown command 'frobnicate'" },
    { "list --bogus", "ublk: unknown option '--bogus'" },
    { "del", "ublk: del: name a device id, or --all" },
    { "del seven", "ublk: del: 'seven' is not a device id" },
    { "del 1 --all", "ublk: del: give ids or --all, not both" },
    { "doctor --json", "ublk: doctor does not take --json" },
    { "decode", "ublk: decode: name a kind" },
    { "decode pie 00", "ublk: decode: unknown kind 'pie'" },
    { "decode dev-info 00ff", "ublk: decode dev-info: dev-info is 64 bytes, got 2" },
    { "decode sqe xyz", "ublk: decode sqe: odd number of hex digits (3)" },
    { "decode ctrl-cmd", "ublk: decode ctrl-cmd: no hex bytes given" },
    -- add's misuse names the flag the user typed, and is told before anything reaches the kernel
    { "add -t ram --block-size 3", "ublk: add: --block-size 3: must be a power of two from 512 to 4 KiB" },
    { "add -t file", "ublk: add: -f/--file: the file target needs the path of a file or block device" },
    { "add -t null --max-io 5", "ublk: add: --max-io 5: must be a multiple of the page size" },
    { "add -t null --recovery maybe", "ublk: add: --recovery maybe: must be 'requeue', 'fail_in_flight' or 'fail_io'" },
    { "add -t ram --recovery requeue", "ublk: add: --recovery requeue: the ram target keeps its data in the server's memory" },
    { "add -t null --restart", "ublk: add: --restart needs --recovery MODE (requeue, fail_in_flight or fail_io)" },
    { "add -t null --recovery requeue --restart --foreground", "ublk: add: --restart supervises a server in the background" },
    { "recover", "ublk: recover: name the device id" },
    { "recover seven", "ublk: recover: 'seven' is not a device id" },
    { "recover 1 2", "ublk: recover: one device id, not '2' as well" },
    { "recover 1 --bogus", "ublk: recover: unknown option '--bogus'" },
  }
  for _, m in ipairs(misuse) do
    it("exits 2 on misuse: ublk " .. m[1], function()
      local code, _, err = run.ublk(m[1])
      assert.are.equal(2, code)
      assert.are.equal(m[2], err:sub(1, #m[2]))
    end)
  end

  it("decodes the seed's control header from split hex", function()
    local code, out = run.ublk("decode ctrl-cmd ffffffff ffff 4000 c0811101c0000000 4000000000000000 0000 0000 00000000")
    assert.are.equal(0, code)
    assert.matches("%+6   2  len%s+= 64", out)
    assert.matches("warning: data%[0%] = 0x40", out)
  end)

  it("prints the version", function()
    local code, out = run.ublk("version")
    assert.are.equal(0, code)
    assert.matches("^lua%-ublk %d+%.%d+%.%d+\n$", out)
  end)
end)
