-- Loaded before every spec: the ASan build of ublk.core when tools/test-all asks for it.
local cpath = os.getenv("UBLK_SPEC_CPATH")
if cpath then package.cpath = cpath .. ";" .. package.cpath end
