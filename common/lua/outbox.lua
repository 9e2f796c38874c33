-- outbox: removes notifications of one shard that have been published.
-- ARGV[4..]: shard, then the stream ids published. Returns the number still waiting.
local sh = ARGV[4]
local k = k_outbox(sh)
for i = 5, #ARGV do redis.call('XDEL', k, ARGV[i]) end
local left = redis.call('XLEN', k)
if left == 0 then
  redis.call('DEL', k)
  redis.call('SREM', NTIDX, sh)
end
return left
