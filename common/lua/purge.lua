-- purge: every pending message of a device becomes PURGED (shown as CANCELLED to producers that did
-- not use Drover-only fields). Works in bounded steps; the caller repeats while more is returned.
-- ARGV[4..]: device, shard, step size. Returns {'OK', purged, more}.
local dev, sh, step = ARGV[4], ARGV[5], tonumber(ARGV[6])
local n = 0
local function purge(id)
  local m = load_msg(id)
  if m and (m.st == 'NOT_DELIVERED' or (m.st == 'UNKNOWN' and attempts(m) == 0)) then
    transition(m, 'PURGED', 'purged')
    n = n + 1
  end
end
for _, id in ipairs(redis.call('ZRANGE', k_sched(dev), 0, step - 1)) do purge(id) end
local q = k_queue(dev)
if n < step and redis.call('EXISTS', q) == 1 then
  for _, e in ipairs(redis.call('XRANGE', q, '-', '+', 'COUNT', step - n)) do
    purge(e[2][2])
    -- an entry whose message already finished is dropped too
    if redis.call('EXISTS', q) == 1 and redis.call('XRANGE', q, e[1], e[1])[1] then drop_entry(q, e[1]) end
  end
end
wake(sh, dev, NOW)
local more = 0
if redis.call('EXISTS', q) == 1 or redis.call('EXISTS', k_sched(dev)) == 1 then more = 1 end
return {'OK', n, more}
