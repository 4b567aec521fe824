--- The Lua side of a device with a `handler` or `hooks`: runs the requests' functions in pooled
-- coroutines (runners), wakes the ones that sleep or wait for a descriptor, and sends the answers
-- back in batches (to the queue threads, or to the kernel for Lua-owned rings).
-- One scheduler per device; all of it runs on the Lua thread that owns the device, never on a queue
-- thread.
--
-- The request path is in C (csrc/lua/dispatch.c, given as `I` by ublk.device): a pooled coroutine
-- (a runner) calls the handlers of a whole batch one after another, so a handler that returns
-- without waiting costs a protected call and no Lua code of ours. A handler that waits keeps its
-- runner; it comes back here, to be woken by the device's timer or a descriptor and resumed until
-- it returns (the runner then answers it and ends).
-- @module ublk.handler
local core = require("ublk.core")

local M = {}

--- The ops a handler table may name, by the kernel's op number.
M.ops = { read = 0, write = 1, flush = 2, discard = 3, write_zeroes = 5 }

local EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = 1, 4, 8, 16

-- what a handler's coroutine yields to its scheduler
local SLEEP, WAIT = {}, {}

-- runner coroutine -> true (weak keys): ublk.sleep and friends yield only from one of these
local workers = setmetatable({}, { __mode = "k" })

local yield, resume, status = coroutine.yield, coroutine.resume, coroutine.status
local monotonic = core.monotonic

local function in_worker()
  local co, main = coroutine.running()
  return not main and workers[co] ~= nil
end

--- Sleep `seconds`: inside a handler, only this request waits; elsewhere the thread sleeps.
function M.sleep(seconds)
  if type(seconds) ~= "number" or seconds < 0 then
    error("ublk.sleep: seconds must be a number >= 0, got " .. tostring(seconds), 2)
  end
  if in_worker() then return yield(SLEEP, monotonic() + seconds) end
  core.sleep(seconds)
end

local function fd_of(fd, who)
  if math.type(fd) == "integer" and fd >= 0 then return fd end
  if type(fd) == "userdata" or type(fd) == "table" then
    local get = fd.getfd or fd.fd or fd.fileno
    if type(get) == "function" then
      local n = get(fd)
      if math.type(n) == "integer" and n >= 0 then return n end
    end
  end
  error(("%s: expected a file descriptor (an integer >= 0, or an object with :getfd()), got %s"):format(who, tostring(fd)), 3)
end

local function wait_fd(fd, events, timeout, who)
  fd = fd_of(fd, who)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error(who .. ": timeout must be a number of seconds >= 0", 3)
  end
  if in_worker() then
    return yield(WAIT, fd, events, timeout and monotonic() + timeout)
  end
  local revents, msg, errno = core.poll(timeout or -1, fd, events)
  if not revents then return nil, msg, errno end
  return revents ~= 0
end

--- Wait until `fd` is readable: true, or false when `timeout` seconds passed first.
function M.readable(fd, timeout) return wait_fd(fd, EPOLLIN, timeout, "ublk.readable") end

--- Wait until `fd` is writable: true, or false when `timeout` seconds passed first.
function M.writable(fd, timeout) return wait_fd(fd, EPOLLOUT, timeout, "ublk.writable") end

-- A binary heap of timers: { at = seconds, co = coroutine, fd = n | nil, cancelled = bool }.
local function heap_push(h, e)
  local i = #h + 1
  h[i] = e
  while i > 1 do
    local p = i // 2
    if h[p].at <= e.at then break end
    h[i], h[p] = h[p], e
    i = p
  end
end

local function heap_pop(h)
  local top, n = h[1], #h
  local last = h[n]
  h[n] = nil
  n = n - 1
  if n == 0 then return top end
  local i = 1
  while true do
    local c = 2 * i
    if c > n then break end
    if c < n and h[c + 1].at < h[c].at then c = c + 1 end
    if h[c].at >= last.at then break end
    h[i] = h[c]
    i = c
  end
  h[i] = last
  return top
end

local Scheduler = {}
Scheduler.__index = Scheduler

-- Each scheduler's device methods (ublk.device's private ones), kept here and not in a field of the
-- scheduler, which a program reaches as dev.sched (weak keys: they go with the scheduler).
local internals = setmetatable({}, { __mode = "k" })

-- Log a handler's failure: each distinct message once with its traceback, repeats counted and
-- summed up at most every 10 seconds, and at most 10 new messages a second.
local function report(s, req, msg, raised)
  s.failures = s.failures + 1
  local key = req.op .. " handler: " .. tostring(msg):match("^[^\n]*")
  local seen = s.seen[key]
  local now = monotonic()
  if seen then
    seen.count = seen.count + 1
    if now - seen.said >= 10 then
      s:say(("%s (%d more times in %d s)"):format(key, seen.count, math.floor(now - seen.said + 0.5)))
      seen.count, seen.said = 0, now
    end
    return
  end
  if now - s.window >= 1 then s.window, s.in_window = now, 0 end
  s.in_window = s.in_window + 1
  if s.in_window > 10 then
    s.suppressed = s.suppressed + 1
    return
  end
  s.seen[key] = { count = 0, said = now }
  if raised then -- msg is the traceback
    s:say(("%s handler failed at offset %d, length %d: answered EIO\n%s"):format(req.op, req.offset, req.length, msg))
  else
    s:say(("%s handler at offset %d, length %d %s"):format(req.op, req.offset, req.length, msg))
  end
end

--- A scheduler for `dev`: `I` is the device's C methods (ublk.device's), `handlers` maps op numbers
-- to functions; `log(line)` takes messages.
function M.new(dev, I, handlers, log)
  local s = setmetatable({
    dev = dev, handlers = handlers, log = log,
    fds = {}, pool = {}, timers = {}, runnable = {}, -- pool: idle runners (coroutine, function pairs)
    waiting = {},   -- fd -> { {co, req, events, timer}, ... }
    watched = {},   -- fd -> events given to epoll
    armed = nil,    -- when the device's timer fires
    seen = {}, window = 0, in_window = 0, suppressed = 0, failures = 0,
    alarms = {},    -- fd -> true: descriptors of the owner's (a signal, the device's end), not a handler's
    alarm = false,  -- one of them was ready in the last dispatch
  }, Scheduler)
  internals[s] = I
  s.on_yield = function(co, req, what, a, b, c) s:file(co, req, what, a, b, c) end
  s.on_error = function(req, msg, raised) report(s, req, msg, raised) end
  -- closes every dispatch, even one a failing log function or descriptor wait leaves by error:
  -- the answers collected so far go to the queues
  s.flusher = setmetatable({}, { __close = function() I.flush(dev) end })
  return s
end

-- Hand a line to the owner's log; a log that fails must not leave a request unanswered.
function Scheduler:say(line)
  pcall(self.log, line)
end

-- File a coroutine by what it yielded.
function Scheduler:file(co, req, what, a, b, c)
  if what == SLEEP then
    heap_push(self.timers, { at = a, co = co, req = req })
  elseif what == WAIT then
    self:wait(co, req, a, b, c)
  else
    -- a plain coroutine.yield() in a handler: run it again on the next dispatch
    self.runnable[#self.runnable + 1] = { co = co, req = req }
  end
end

-- Resume a handler that waited; its runner answers the request once the handler returns or raises.
function Scheduler:step(co, req, ...)
  local ok, a, b, c, d = resume(co, ...)
  if not ok then -- the runner itself failed (out of memory); a handler's own end is answered in C
    internals[self].fail_request(req)
    report(self, req, debug.traceback(co, tostring(a)), true)
  elseif status(co) ~= "dead" then
    self:file(co, req, a, b, c, d)
  end
end

function Scheduler:wait(co, req, fd, events, deadline)
  local list = self.waiting[fd]
  if not list then list = {}; self.waiting[fd] = list end
  local w = { co = co, req = req, events = events }
  if deadline then
    w.timer = { at = deadline, co = co, req = req, waiter = w, fd = fd }
    heap_push(self.timers, w.timer)
  end
  list[#list + 1] = w
  self:rewatch(fd)
end

-- Tell epoll what the waiters of fd want now.
function Scheduler:rewatch(fd)
  local events = 0
  for _, w in ipairs(self.waiting[fd] or {}) do events = events | w.events end
  if events == 0 then self.waiting[fd] = nil end
  if self.watched[fd] ~= events then
    local ok, msg = internals[self].watch(self.dev, fd, events)
    if not ok then
      -- not pollable (a regular file): wake the waiters now, as poll(2) would
      self:say("ublk: cannot wait for descriptor " .. fd .. ": " .. tostring(msg))
      local list = self.waiting[fd] or {}
      self.waiting[fd] = nil
      for _, w in ipairs(list) do
        if w.timer then w.timer.cancelled = true end
        self.runnable[#self.runnable + 1] = { co = w.co, req = w.req, value = true }
      end
      events = 0
    end
    self.watched[fd] = events ~= 0 and events or nil
  end
end

function Scheduler:fd_ready(fd, revents)
  if self.alarms[fd] then self.alarm = true return end
  local list = self.waiting[fd]
  if not list then return end
  local keep, wake = {}, {}
  for _, w in ipairs(list) do
    if revents & (w.events | EPOLLERR | EPOLLHUP) ~= 0 then wake[#wake + 1] = w else keep[#keep + 1] = w end
  end
  self.waiting[fd] = keep
  self:rewatch(fd)
  for _, w in ipairs(wake) do
    if w.timer then w.timer.cancelled = true end
    self:step(w.co, w.req, true)
  end
end

function Scheduler:run_timers()
  local h, now = self.timers, nil
  while h[1] do
    now = now or monotonic()
    if h[1].at > now then break end
    local e = heap_pop(h)
    if not e.cancelled then
      if e.waiter then -- a descriptor wait that timed out
        local list = self.waiting[e.fd]
        for i, w in ipairs(list or {}) do
          if w == e.waiter then table.remove(list, i) break end
        end
        self:rewatch(e.fd)
        self:step(e.co, e.req, false)
      else
        self:step(e.co, e.req)
      end
    end
  end
end

-- Arm the device's timer for the earliest sleeper (now, when a plain yield wants to run again).
function Scheduler:arm()
  local at
  if self.runnable[1] then
    at = monotonic()
  else
    local h = self.timers
    while h[1] and h[1].cancelled do heap_pop(h) end
    at = h[1] and h[1].at
  end
  if at ~= self.armed then
    internals[self].arm_timer(self.dev, at)
    self.armed = at
  end
end

--- Handle what is ready: new requests, due timers, ready descriptors; wait up to `timeout`
-- seconds (default 0; negative: until something is ready) for something first. Returns how many
-- new requests were started.
function Scheduler:dispatch(timeout)
  local dev, I = self.dev, internals[self]
  local fds = self.fds
  local _ <close> = self.flusher -- before the poll: whatever happens from there on, the flush runs
  local reqs, fired, nfd = I.poll(dev, timeout or 0, fds)
  local n = 0
  if fired then self.armed = nil end
  if reqs then n = I.run(dev, self.handlers, self.pool, workers, self.on_yield, self.on_error) end
  for i = 1, nfd do self:fd_ready(fds[2 * i - 1], fds[2 * i]) end
  if self.runnable[1] then
    local run = self.runnable
    self.runnable = {}
    for _, e in ipairs(run) do self:step(e.co, e.req, e.value) end
  end
  if self.timers[1] then self:run_timers() end
  self:arm()
  if self.suppressed > 0 then
    self:say(("%d more handler failures not logged (over 10 new messages a second)"):format(self.suppressed))
    self.suppressed = 0
  end
  return n
end

--- One dispatch (as `dispatch`) that says whether a descriptor given to `alarm_on` was ready in it.
function Scheduler:dispatch_alarmed(timeout)
  self.alarm = false
  self:dispatch(timeout)
  return self.alarm
end

--- Wake the dispatch (and set self.alarm) when `fd` is readable: the owner's descriptors that are
-- not a handler's, such as run()'s signal catcher and the device's end.
function Scheduler:alarm_on(fd)
  self.alarms[fd] = true
  return internals[self].watch(self.dev, fd, EPOLLIN)
end

--- Stop waking for the descriptors given to alarm_on.
function Scheduler:alarms_off()
  for fd in pairs(self.alarms) do internals[self].watch(self.dev, fd, 0) end
  self.alarms = {}
end

return M
