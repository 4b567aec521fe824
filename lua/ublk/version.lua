--- The release's version: the one place it is written. ublk.version reads it, and `make rockspec`
-- writes it into rockspec/ublk-VERSION-1.rockspec.
-- @module ublk.version
return "0.2.0"
