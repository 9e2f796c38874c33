-- dispatch: one pass over a shard the caller owns. Expires overdue messages, then, for each due
-- device, decides what (if anything) may be sent now and records the send before it happens, so a
-- crash after this script means a re-send with the same id, never a loss.
-- ARGV[4..]: shard, epoch, node, batch, default window, default interval (ms), ack timeout (ms),
-- longest retry wait (ms), back-off factor, jitter (%), random seed.
-- Returns {'FENCED'} or {'OK', expired, failed, more, {device, id, guarantee, command, data, attempt, ...}}.
local sh, epoch, node = ARGV[4], ARGV[5], ARGV[6]
local batch = tonumber(ARGV[7])
local DEF_WIN, DEF_IV = tonumber(ARGV[8]), tonumber(ARGV[9])
local ACK_TO, RETRY_MAX = tonumber(ARGV[10]), tonumber(ARGV[11])
local BACKOFF, JITTER = tonumber(ARGV[12]), tonumber(ARGV[13])
local seed = tonumber(ARGV[14]) % 2147483646 + 1

-- Fencing: only the current lease holder (same node, same epoch) may change this shard.
if redis.call('GET', P .. 'lease:' .. sh) ~= node .. ' ' .. epoch then return {'FENCED'} end

-- The consumer is the shard, not the node: a successor owner reads the same pending entries list.
local CONSUMER = 's' .. sh
local out = {}
local expired, failed = 0, 0

-- Park-Miller generator seeded by the caller: scripts must not depend on Redis's own randomness.
local function rand()
  seed = (seed * 16807) % 2147483647
  return seed / 2147483647
end

local function retry_delay(att)
  local d = ACK_TO * (BACKOFF ^ (att - 1))
  if d > RETRY_MAX then d = RETRY_MAX end
  local j = d * JITTER / 100
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

local function dispatch_device(dev)
  local q, sc, ds = k_queue(dev), k_sched(dev), k_devstate(dev)
  local cfg = redis.call('HMGET', k_devcfg(dev), 'iv', 'win')
  local iv = tonumber(cfg[1]) or DEF_IV
  local win = tonumber(cfg[2]) or DEF_WIN
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
        if mdue <= NOW and m.max and attempts(m) >= tonumber(m.max) then
          transition(m, 'FAILED', 'max_attempts')
          failed = failed + 1
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

  local sent = false
  if NOW >= nxt then
    local m = retry
    if not m then
      for _ = 1, 64 do
        if unread <= 0 or (inflight >= win and not next_unread_is_no(q)) then break end
        local r = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', 1, 'STREAMS', q, '>')
        if not r then break end
        local e = r[1][2][1]
        unread = unread - 1
        local cand = load_msg(e[2][2])
        if cand and sendable(cand) then
          if cand.ttl and tonumber(cand.ttl) <= NOW then
            transition(cand, 'EXPIRED', 'deadline')
            expired = expired + 1
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
      local n = #out
      out[n + 1] = dev; out[n + 2] = m.id; out[n + 3] = m.g; out[n + 4] = m.cmd
      out[n + 5] = m.data or ''; out[n + 6] = att
      sent = true
    end
  end

  -- When does this device need attention next? Nothing queued: it leaves the schedule.
  if redis.call('EXISTS', q) == 0 and redis.call('EXISTS', sc) == 0 then
    redis.call('ZREM', k_due(sh), dev)
    return
  end
  local due = nil
  local function consider(t) if not due or t < due then due = t end end
  local can_take = unread > 0 and (inflight < win or next_unread_is_no(q))
  if (retry and not sent) or can_take then consider(math.max(NOW, nxt)) end
  if soonest then consider(math.max(soonest, nxt)) end
  local first = redis.call('ZRANGE', sc, 0, 0, 'WITHSCORES')
  if first[2] then consider(tonumber(first[2])) end
  if not due then due = NOW + RETRY_MAX end
  redis.call('ZADD', k_due(sh), s(due), dev)
end

-- Deadlines first, so an expired message is never sent.
local ids = redis.call('ZRANGEBYSCORE', k_exp(sh), '-inf', NOW, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  redis.call('ZREM', k_exp(sh), id)
  local m = load_msg(id)
  if m and sendable(m) then
    transition(m, 'EXPIRED', 'deadline')
    expired = expired + 1
    wake(sh, m.dev, NOW)
  end
end

local devs = redis.call('ZRANGEBYSCORE', k_due(sh), '-inf', NOW, 'LIMIT', 0, batch)
for _, dev in ipairs(devs) do dispatch_device(dev) end
reindex(sh)
local more = 0
if #devs >= batch or #ids >= batch then more = 1 end
return {'OK', expired, failed, more, out}
