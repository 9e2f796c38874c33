-- outbox: removes notifications of one shard that have been published.
-- ARGV[4..]: shard, id of the last entry published. The owner publishes from the head of the outbox
-- in order and stops at the first failure, so everything up to that id was published; entries added
-- since carry larger ids. Returns the number still waiting.
local sh, last = ARGV[4], ARGV[5]
local k = k_outbox(sh)
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
if not ms then return redis.error_reply('ERR outbox: bad stream id ' .. last) end
redis.call('XTRIM', k, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
local left = redis.call('XLEN', k)
if left == 0 then
  redis.call('DEL', k)
  redis.call('SREM', NTIDX, sh)
end
return left
