-- luacheck (Debian's lua-check): `make lint`, and the first step of `make test`.
std = "lua54"
include_files = { "lua/**/*.lua", "spec/**/*.lua", "examples/*.lua", "tools/bench.d/*.lua", "bin/ublk", "tools/rockspec",
  ".luacheckrc", ".busted" }
exclude_files = { "build/**", "dist/**", "lua_modules/**", ".luarocks/**" }
max_code_line_length = 160  -- messages run long; wrapped beyond this
max_string_line_length = false   -- messages stay whole, so that grep finds them
max_comment_line_length = 120
files["spec/**/*.lua"] = { std = "+busted" }
-- a variable kept only for its <close> (a device deleted at the end of its block) is named _something
ignore = { "211/_.+" }
-- an nbdkit Lua plugin: nbdkit calls the globals it defines, with arguments some ignore
files["tools/bench.d/ramdisk-nbdkit.lua"] = {
  globals = { "config", "open", "get_size", "can_write", "can_trim", "can_flush", "flush", "pread", "pwrite", "trim" },
  unused_args = false,
}
-- a spec that stubs io.open to stage a failing read
files["spec/host/process_spec.lua"] = { read_globals = { io = { fields = { open = { read_only = false } } } } }
