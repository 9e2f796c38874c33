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

-- Forward-only state machine (mirrored by common/src/status.c). Acks move by RANK; the withdrawal
-- outcomes (CANCELLED, EXPIRED, FAILED, PURGED) are applied only to pending messages, by the scripts
-- that produce them.
local RANK = {NOT_DELIVERED = 0, UNKNOWN = 0, DELIVERED = 1, COMPLETED = 2, COMPLETED_WITH_ERROR = 2,
              CANCELLED = 3, EXPIRED = 3, FAILED = 3, PURGED = 3}
local FINAL = {COMPLETED = true, COMPLETED_WITH_ERROR = true, CANCELLED = true, EXPIRED = true, FAILED = true,
               PURGED = true}
-- Status log kept for resumable event streams (SSE Last-Event-ID): the newest changes, about this many.
local LOG_LEN = 100000

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

local MFIELDS = {'dev', 'sh', 'g', 'cmd', 'data', 'st', 'tmp', 'pd', 'att', 'due', 'ttl', 'max', 'ext', 'idk', 'sid',
                 'shown', 'key'}

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
  redis.call('XADD', P .. 'log', 'MAXLEN', '~', LOG_LEN, '*', 'id', m.id, 'dev', m.dev, 'st', st, 'pd', m.pd or '',
             'key', m.key or '', 'ts', s(NOW))
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

-- ---- Sending: shared by dispatch.lua (MQTT) and pull.lua (REST device pull) ----------------------

-- Send policy, filled by the sending script from its arguments before calling send_step():
-- win, iv (defaults), ack_to, retry_max, backoff, jitter (%), seed, consumer (stream consumer name).
local POL = {}
-- Outcomes counted during one script run.
local STATS = {expired = 0, failed = 0}

-- Park-Miller generator seeded by the caller: scripts must not depend on Redis's own randomness.
local function rand()
  POL.seed = (POL.seed * 16807) % 2147483647
  return POL.seed / 2147483647
end

local function retry_delay(att)
  local d = POL.ack_to * (POL.backoff ^ (att - 1))
  if d > POL.retry_max then d = POL.retry_max end
  local j = d * POL.jitter / 100
  return math.floor(d - j + 2 * j * rand())
end

local function sendable(m)
  return m.st == 'NOT_DELIVERED' or (m.st == 'UNKNOWN' and attempts(m) == 0)
end

-- True when the next unread entry of q is a guarantee NO message. Those never wait for a window
-- slot (they are never acknowledged, so they never hold one), only for pacing; first sends still
-- leave in acceptance order.
local function next_unread_is_no(q)
  local last = nil
  for _, grp in ipairs(redis.call('XINFO', 'GROUPS', q)) do
    for i = 1, #grp, 2 do
      if grp[i] == 'last-delivered-id' then last = grp[i + 1] end
    end
  end
  if not last then return false end
  local r = redis.call('XRANGE', q, '(' .. last, '+', 'COUNT', 1)
  if not r[1] then return false end
  return redis.call('HGET', k_msg(r[1][2][2]), 'g') == 'NO'
end

-- One decision for one device: promote due scheduled messages, fail or pick re-sends, take the next
-- entry when the window (or guarantee NO) allows, and, when pacing allows, record the send. Keeps
-- the device's entry in the shard schedule up to date. Returns the message to send (with .att), or nil.
-- With allow_send false (devices in pull mode, seen by the MQTT dispatcher) only the bookkeeping runs.
local function send_step(sh, dev, allow_send)
  local q, sc, ds = k_queue(dev), k_sched(dev), k_devstate(dev)
  local cfg = redis.call('HMGET', k_devcfg(dev), 'iv', 'win')
  local iv = tonumber(cfg[1]) or POL.iv
  local win = tonumber(cfg[2]) or POL.win
  local nxt = tonumber(redis.call('HGET', ds, 'next')) or 0

  -- Messages whose not-before time has come join the queue, behind what is already there.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', sc, '-inf', NOW, 'LIMIT', 0, 100)) do
    redis.call('ZREM', sc, id)
    local m = load_msg(id)
    if m and sendable(m) then enqueue(dev, id) end
  end

  -- In flight: entries read by the group and not yet acknowledged, oldest first.
  local inflight, retry, soonest = 0, nil, nil
  if redis.call('EXISTS', q) == 1 then
    for _, e in ipairs(redis.call('XPENDING', q, GROUP, '-', '+', win + 16)) do
      local sid = e[1]
      local ent = redis.call('XRANGE', q, sid, sid)
      local m = ent[1] and load_msg(ent[1][2][2])
      if not m or m.st ~= 'NOT_DELIVERED' then
        drop_entry(q, sid) -- finished elsewhere; nothing left to send
      else
        local mdue = tonumber(m.due) or 0
        if m.ttl and tonumber(m.ttl) <= NOW then
          -- also enforced here, not only by the shard pass, so a REST pull never re-sends it
          transition(m, 'EXPIRED', 'deadline')
          STATS.expired = STATS.expired + 1
        elseif mdue <= NOW and m.max and attempts(m) >= tonumber(m.max) then
          transition(m, 'FAILED', 'max_attempts')
          STATS.failed = STATS.failed + 1
        else
          inflight = inflight + 1
          if mdue <= NOW and not retry then
            retry = m
          elseif not soonest or mdue < soonest then
            soonest = mdue
          end
        end
      end
    end
  end
  local qlen = redis.call('XLEN', q)
  local unread = 0
  if qlen > 0 then unread = qlen - redis.call('XPENDING', q, GROUP)[1] end

  local sent = nil
  if allow_send and NOW >= nxt then
    local m = retry
    if not m then
      for _ = 1, 64 do
        if unread <= 0 or (inflight >= win and not next_unread_is_no(q)) then break end
        local r = redis.call('XREADGROUP', 'GROUP', GROUP, POL.consumer, 'COUNT', 1, 'STREAMS', q, '>')
        if not r then break end
        local e = r[1][2][1]
        unread = unread - 1
        local cand = load_msg(e[2][2])
        if cand and sendable(cand) then
          if cand.ttl and tonumber(cand.ttl) <= NOW then
            transition(cand, 'EXPIRED', 'deadline')
            STATS.expired = STATS.expired + 1
          else
            m = cand
            if m.g ~= 'NO' then inflight = inflight + 1 end
            break
          end
        else
          drop_entry(q, e[1])
        end
      end
    end
    if m then
      local att = attempts(m) + 1
      local mdue = NOW + retry_delay(att)
      redis.call('HSET', k_msg(m.id), 'att', att, 'sent', s(NOW), 'due', s(mdue))
      history(m.id, m.st, att, att == 1 and 'sent' or 'resent')
      if m.g == 'NO' then
        -- Fire and forget: sent once, when pacing allowed (Duster dropped these instead).
        unqueue(m)
        retire(m)
      elseif not soonest or mdue < soonest then
        soonest = mdue
      end
      nxt = NOW + iv
      redis.call('HSET', ds, 'next', s(nxt), 'last', s(NOW))
      redis.call('EXPIRE', ds, RETENTION)
      m.att = att
      sent = m
    end
  end

  -- When does this device need attention next? Nothing queued: it leaves the schedule.
  if redis.call('EXISTS', q) == 0 and redis.call('EXISTS', sc) == 0 then
    redis.call('ZREM', k_due(sh), dev)
    return sent
  end
  local due = nil
  local function consider(t) if not due or t < due then due = t end end
  local can_take = unread > 0 and (inflight < win or next_unread_is_no(q))
  if allow_send then
    if (retry and not sent) or can_take then consider(math.max(NOW, nxt)) end
    if soonest then consider(math.max(soonest, nxt)) end
  end
  local first = redis.call('ZRANGE', sc, 0, 0, 'WITHSCORES')
  if first[2] then consider(tonumber(first[2])) end
  if not due then due = NOW + POL.retry_max end
  redis.call('ZADD', k_due(sh), s(due), dev)
  return sent
end
