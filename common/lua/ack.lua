-- ack: applies a device's status report for one message.
-- ARGV[4..]: device (from the topic or path), message id, reported status.
-- Returns {'OK', status, shard} | {'IGNORED', current} | {'WRONG_DEVICE'} | {'UNKNOWN_ID'}.
local dev, id, new = ARGV[4], ARGV[5], ARGV[6]
local m = load_msg(id)
if not m then return {'UNKNOWN_ID'} end
if m.dev ~= dev then return {'WRONG_DEVICE'} end
if FINAL[m.st] or RANK[new] <= RANK[m.st] then return {'IGNORED', m.st} end
-- A message never sent (nor shown by a REST poll) cannot be acknowledged: no device saw its id.
if attempts(m) == 0 and m.shown ~= '1' then return {'IGNORED', m.st} end

transition(m, new, 'ack')
redis.call('HSET', k_devstate(dev), 'ack', s(NOW))
-- The freed window slot lets the next message go as soon as pacing allows, not at the next scan.
if redis.call('EXISTS', k_queue(dev)) == 1 or redis.call('EXISTS', k_sched(dev)) == 1 then
  local nxt = tonumber(redis.call('HGET', k_devstate(dev), 'next')) or 0
  wake(m.sh, dev, math.max(NOW, nxt))
end
return {'OK', new, m.sh}
