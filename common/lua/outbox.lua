-- outbox: removes notifications of one shard that have been published.
-- ARGV[4..]: shard, then the stream ids published: always the oldest entries of the outbox, in order
-- (the owner publishes from the head and stops at the first failure). Returns the number still waiting.
local sh = ARGV[4]
local k = k_outbox(sh)
if #ARGV >= 5 then
  -- Everything up to the last published id goes in one trim: entries added since carry larger ids.
  local ms, seq = string.match(ARGV[#ARGV], '^(%d+)-(%d+)$')
  if ms then
    redis.call('XTRIM', k, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
  else
    for i = 5, #ARGV do redis.call('XDEL', k, ARGV[i]) end
  end
end
local left = redis.call('XLEN', k)
if left == 0 then
  redis.call('DEL', k)
  redis.call('SREM', NTIDX, sh)
end
return left
