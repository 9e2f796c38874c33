-- peek: Duster's GET /consumer/getLastMessage: the oldest NOT_DELIVERED message of a device, without
-- touching pacing or attempts (as Duster did). It is marked as shown so the device may acknowledge it.
-- ARGV[4]: device. Returns {} or {id, guarantee, command, data}.
local q = k_queue(ARGV[4])
if redis.call('EXISTS', q) == 0 then return {} end
for _, e in ipairs(redis.call('XRANGE', q, '-', '+', 'COUNT', 100)) do
  local m = load_msg(e[2][2])
  if m and m.st == 'NOT_DELIVERED' then
    redis.call('HSET', k_msg(m.id), 'shown', '1')
    return {m.id, m.g, m.cmd, m.data or ''}
  end
end
return {}
