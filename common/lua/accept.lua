-- accept: stores one producer message atomically.
-- ARGV[4..]: device, shard, guarantee, command, data ('' = null), tmpId, producerDeviseId ('' = no
-- certificate), deliver-by (abs ms or ''), max attempts, not-before (abs ms), idempotency key,
-- fingerprint, largest id, ext ('1' when Drover-only fields were used), request token, token ttl (s),
-- API key id of the submitter ('' over MQTT).
-- The request token makes the ingress's own retries safe: a script whose reply was lost (timeout while
-- Redis was paused) may still have run, and the retry must then find that message, not store another.
-- Returns {'OK', id, status, cancelled[, 'retry']} | {'DUP', id, status} | {'CONFLICT', id} | {'FULL'}.
local dev, sh, g, cmd, data = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local tmp, pd, ttl, mx, nb = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local idk, fp, idmax, ext = ARGV[14], ARGV[15], tonumber(ARGV[16]), ARGV[17]
local rq, rqttl, key = ARGV[18], ARGV[19], ARGV[20] or ''


if rq ~= '' then
  local prev = redis.call('GET', P .. 'rq:' .. rq)
  if prev then
    local om = load_msg(prev)
    if om then return {'OK', prev, om.st, 0, 'retry'} end
  end
end

if idk ~= '' then
  local v = redis.call('GET', k_idem(idk))
  if v then
    local sp = string.find(v, ' ', 1, true)
    local oid = string.sub(v, sp + 1)
    local om = load_msg(oid)
    if om then
      if string.sub(v, 1, sp - 1) ~= fp then return {'CONFLICT', oid} end
      notify(om, om.st) -- repeat the receipt, with the original id
      return {'DUP', oid, om.st}
    end
  end
end

-- Ids stay below idmax (2^31 by default: Duster firmware keeps ids in 32-bit ints). After the wrap an
-- id is reused only when no record with it exists, i.e. its message finished and its retention ended.
local id = nil
for _ = 1, 1000 do
  local n = redis.call('INCR', P .. 'seq')
  if n > idmax then
    redis.call('SET', P .. 'seq', 1)
    n = 1
  end
  if redis.call('EXISTS', k_msg(s(n))) == 0 then
    id = s(n)
    break
  end
end
if not id then return {'FULL'} end

local st = (g == 'NO') and 'UNKNOWN' or 'NOT_DELIVERED'

-- ONLY_LAST supersedes every undelivered message with the same (device, command), whatever its
-- guarantee, as Duster did; unlike Duster, their producers are told CANCELLED.
local cancelled = 0
if g == 'ONLY_LAST' then
  local list = redis.call('HGET', k_bycmd(dev), cmd)
  if list then
    for oid in string.gmatch(list, '[^,]+') do
      local om = load_msg(oid)
      if om and om.st == 'NOT_DELIVERED' then
        transition(om, 'CANCELLED', 'superseded')
        cancelled = cancelled + 1
      end
    end
    redis.call('HDEL', k_bycmd(dev), cmd)
  end
end

local f = {'dev', dev, 'sh', sh, 'g', g, 'cmd', cmd, 'st', st, 'ts', s(NOW), 'chg', s(NOW), 'att', '0', 'ext', ext}
if data ~= '' then f[#f + 1] = 'data'; f[#f + 1] = data end
if pd ~= '' then f[#f + 1] = 'tmp'; f[#f + 1] = tmp; f[#f + 1] = 'pd'; f[#f + 1] = pd end
if ttl ~= '' then f[#f + 1] = 'ttl'; f[#f + 1] = ttl end
if mx ~= '' then f[#f + 1] = 'max'; f[#f + 1] = mx end
if nb ~= '' then f[#f + 1] = 'nb'; f[#f + 1] = nb end
if idk ~= '' then f[#f + 1] = 'idk'; f[#f + 1] = idk end
if key ~= '' then f[#f + 1] = 'key'; f[#f + 1] = key end
redis.call('HSET', k_msg(id), unpack(f))
history(id, st, 0, 'accepted')
redis.call('ZADD', P .. 'dm:' .. dev, id, id) -- per-device listing by id; stale ids are dropped when listed

if nb ~= '' and tonumber(nb) > NOW then
  redis.call('ZADD', k_sched(dev), nb, id)
  wake(sh, dev, tonumber(nb))
else
  enqueue(dev, id)
  wake(sh, dev, NOW)
end
if ttl ~= '' then
  redis.call('ZADD', k_exp(sh), ttl, id)
  redis.call('ZADD', DUEIDX, 'LT', ttl, sh)
end
if g ~= 'NO' then
  local list = redis.call('HGET', k_bycmd(dev), cmd)
  redis.call('HSET', k_bycmd(dev), cmd, list and (list .. ',' .. id) or id)
end
notify({id = id, dev = dev, sh = sh, tmp = tmp, pd = pd, ext = ext, key = key}, st)
if idk ~= '' then redis.call('SET', k_idem(idk), fp .. ' ' .. id) end
if rq ~= '' then redis.call('SET', P .. 'rq:' .. rq, id, 'EX', rqttl) end
return {'OK', id, st, cancelled}
