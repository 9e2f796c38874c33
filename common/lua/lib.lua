-- Drover: helpers shared by every script (prepended to each at build time).
--
-- Every script takes ARGV[1] = key prefix, ARGV[2] = now (epoch ms, from the calling node),
-- ARGV[3] = retention of finished messages (s); its own arguments follow. Key names are derived
-- from the prefix inside the scripts, so Drover targets a single Redis (primary + replicas), not
-- Redis Cluster. docs/architecture.md lists every key.
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local RETENTION = tonumber(ARGV[3])
local GROUP = 'g'

-- Forward-only state machine (mirrored by common/src/status.c).
local RANK = {NOT_DELIVERED = 0, UNKNOWN = 0, DELIVERED = 1, COMPLETED = 2, COMPLETED_WITH_ERROR = 2,
              CANCELLED = 3, EXPIRED = 3, FAILED = 3}
local FINAL = {COMPLETED = true, COMPLETED_WITH_ERROR = true, CANCELLED = true, EXPIRED = true, FAILED = true}

local function s(n) return string.format('%d', n) end
local function k_msg(id) return P .. 'm:' .. id end
local function k_hist(id) return P .. 'h:' .. id end
local function k_queue(dev) return P .. 'q:' .. dev end
local function k_sched(dev) return P .. 'sc:' .. dev end
local function k_devstate(dev) return P .. 'ds:' .. dev end
local function k_devcfg(dev) return P .. 'dc:' .. dev end
local function k_bycmd(dev) return P .. 'pc:' .. dev end
local function k_due(sh) return P .. 'due:' .. sh end
local function k_exp(sh) return P .. 'exp:' .. sh end
local function k_outbox(sh) return P .. 'nt:' .. sh end
local function k_idem(key) return P .. 'ik:' .. key end
local DUEIDX = P .. 'dueidx'
local NTIDX = P .. 'ntidx'

local MFIELDS = {'dev', 'sh', 'g', 'cmd', 'data', 'st', 'tmp', 'pd', 'att', 'due', 'ttl', 'max', 'ext', 'idk', 'sid'}

-- Loads a message as a table (missing fields are false), or nil when it does not exist.
local function load_msg(id)
  local v = redis.call('HMGET', k_msg(id), unpack(MFIELDS))
  if not v[1] then return nil end
  local m = {id = id}
  for i, f in ipairs(MFIELDS) do m[f] = v[i] end
  return m
end

local function attempts(m) return tonumber(m.att) or 0 end

local function history(id, st, att, ev)
  redis.call('RPUSH', k_hist(id),
    string.format('{"ts":%d,"status":"%s","attempt":%d,"event":"%s"}', NOW, st, att, ev))
end

-- Queues a status change for the shard owner, which publishes it on NATS and, when the producer gave
-- a birth certificate, on producer/response/{producerDeviseId}. Published at least once, in order.
local function notify(m, st)
  redis.call('XADD', k_outbox(m.sh), '*', 'id', m.id, 'dev', m.dev, 'st', st, 'tmp', m.tmp or '',
             'pd', m.pd or '', 'ext', m.ext or '0', 'ts', s(NOW))
  redis.call('SADD', NTIDX, m.sh)
end

-- Removes a stream entry that is done with; an empty stream is deleted with its group.
local function drop_entry(q, sid)
  redis.call('XACK', q, GROUP, sid)
  redis.call('XDEL', q, sid)
  if redis.call('XLEN', q) == 0 then redis.call('DEL', q) end
end

local function enqueue(dev, id)
  local q = k_queue(dev)
  if redis.call('EXISTS', q) == 0 then redis.call('XGROUP', 'CREATE', q, GROUP, '0', 'MKSTREAM') end
  local sid = redis.call('XADD', q, '*', 'id', id)
  redis.call('HSET', k_msg(id), 'sid', sid)
end

-- Takes a message out of its device queue (stream entry, or the not-before schedule).
local function unqueue(m)
  if m.sid then
    drop_entry(k_queue(m.dev), m.sid)
    redis.call('HDEL', k_msg(m.id), 'sid')
    m.sid = false
  else
    redis.call('ZREM', k_sched(m.dev), m.id)
  end
end

-- Removes the message from the (device, command) index used by ONLY_LAST supersession.
local function bycmd_del(m)
  if m.g == 'NO' then return end
  local k = k_bycmd(m.dev)
  local list = redis.call('HGET', k, m.cmd)
  if not list then return end
  local keep = {}
  for x in string.gmatch(list, '[^,]+') do
    if x ~= m.id then keep[#keep + 1] = x end
  end
  if #keep == 0 then redis.call('HDEL', k, m.cmd) else redis.call('HSET', k, m.cmd, table.concat(keep, ',')) end
end

-- The message no longer needs delivery: its record now lives for the retention period only.
local function retire(m)
  redis.call('EXPIRE', k_msg(m.id), RETENTION)
  redis.call('EXPIRE', k_hist(m.id), RETENTION)
  if m.idk then redis.call('EXPIRE', k_idem(m.idk), RETENTION) end
  redis.call('ZREM', k_exp(m.sh), m.id)
end

-- Moves m to st (the caller checked the transition): stores, records history, notifies, and frees
-- the queue slot when the message leaves the pending statuses.
local function transition(m, st, ev)
  local from = m.st
  redis.call('HSET', k_msg(m.id), 'st', st, 'chg', s(NOW))
  history(m.id, st, attempts(m), ev)
  notify(m, st)
  if from == 'NOT_DELIVERED' or from == 'UNKNOWN' then
    unqueue(m)
    bycmd_del(m)
  end
  retire(m)
  m.st = st
end

-- Makes a device due no later than t, and its shard too.
local function wake(sh, dev, t)
  redis.call('ZADD', k_due(sh), 'LT', t, dev)
  redis.call('ZADD', DUEIDX, 'LT', t, sh)
end

-- Recomputes a shard's entry in the due index from its device schedule and its expiry schedule.
local function reindex(sh)
  local best = nil
  local a = redis.call('ZRANGE', k_due(sh), 0, 0, 'WITHSCORES')
  if a[2] then best = tonumber(a[2]) end
  local b = redis.call('ZRANGE', k_exp(sh), 0, 0, 'WITHSCORES')
  if b[2] and (not best or tonumber(b[2]) < best) then best = tonumber(b[2]) end
  if best then redis.call('ZADD', DUEIDX, best, sh) else redis.call('ZREM', DUEIDX, sh) end
end
