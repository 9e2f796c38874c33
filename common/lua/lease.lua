-- lease: membership heartbeat and shard leases for one dispatcher.
-- ARGV[4..]: node, lease ttl (ms), shard count, release ('1' = give everything back and leave).
-- Each node aims at ceil(shards / live nodes) shards: it renews what it holds, hands surplus shards
-- back so newcomers can take them, and takes free shards (a dead node's leases simply expire).
-- Taking a shard increments its epoch; the epoch fences every write of the previous holder.
-- Returns {shard, epoch, shard, epoch, ...} of the shards now held.
local node, ttl, S, release = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local NODES = P .. 'nodes'
local tag = node .. ' '

local mine, free = {}, {}
for sh = 0, S - 1 do
  local v = redis.call('GET', P .. 'lease:' .. sh)
  if not v then
    free[#free + 1] = sh
  elseif string.sub(v, 1, #tag) == tag then
    mine[#mine + 1] = {sh, string.sub(v, #tag + 1)}
  end
end

if release then
  redis.call('ZREM', NODES, node)
  for _, e in ipairs(mine) do redis.call('DEL', P .. 'lease:' .. e[1]) end
  return {}
end

redis.call('ZADD', NODES, NOW + ttl, node)
redis.call('ZREMRANGEBYSCORE', NODES, '-inf', NOW)
local live = redis.call('ZCARD', NODES)
local target = math.ceil(S / live)

while #mine > target do
  local e = table.remove(mine)
  redis.call('DEL', P .. 'lease:' .. e[1])
end
for _, e in ipairs(mine) do redis.call('PEXPIRE', P .. 'lease:' .. e[1], ttl) end
for _, sh in ipairs(free) do
  if #mine >= target then break end
  local ep = redis.call('INCR', P .. 'epoch:' .. sh)
  redis.call('SET', P .. 'lease:' .. sh, tag .. s(ep), 'PX', ttl)
  mine[#mine + 1] = {sh, s(ep)}
end

local out = {}
for _, e in ipairs(mine) do
  out[#out + 1] = s(e[1])
  out[#out + 1] = e[2]
end
return out
