-- dispatch: one pass over a shard the caller owns. Expires overdue messages, then, for each due
-- device, decides what (if anything) may be sent now and records the send before it happens, so a
-- crash after this script means a re-send with the same id, never a loss.
-- ARGV[4..]: shard, epoch, node, batch, default window, default interval (ms), ack timeout (ms),
-- longest retry wait (ms), back-off factor, jitter (%), random seed.
-- Returns {'FENCED'} or {'OK', expired, failed, more, {device, id, guarantee, command, data, attempt, ...}}.
local sh, epoch, node = ARGV[4], ARGV[5], ARGV[6]
local batch = tonumber(ARGV[7])
POL = {win = tonumber(ARGV[8]), iv = tonumber(ARGV[9]), ack_to = tonumber(ARGV[10]),
       retry_max = tonumber(ARGV[11]), backoff = tonumber(ARGV[12]), jitter = tonumber(ARGV[13]),
       seed = tonumber(ARGV[14]) % 2147483646 + 1,
       -- The consumer is the shard, not the node: a successor owner reads the same pending entries.
       consumer = 's' .. sh}

-- Fencing: only the current lease holder (same node, same epoch) may change this shard.
if redis.call('GET', P .. 'lease:' .. sh) ~= node .. ' ' .. epoch then return {'FENCED'} end

local out = {}

-- Deadlines first, so an expired message is never sent.
local ids = redis.call('ZRANGEBYSCORE', k_exp(sh), '-inf', NOW, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  redis.call('ZREM', k_exp(sh), id)
  local m = load_msg(id)
  if m and sendable(m) then
    transition(m, 'EXPIRED', 'deadline')
    STATS.expired = STATS.expired + 1
    wake(sh, m.dev, NOW)
  end
end

local devs = redis.call('ZRANGEBYSCORE', k_due(sh), '-inf', NOW, 'LIMIT', 0, batch)
for _, dev in ipairs(devs) do
  -- Devices in pull mode fetch their messages over REST; the dispatcher only keeps their schedule.
  local pull = redis.call('HGET', k_devcfg(dev), 'mode') == 'pull'
  local m = send_step(sh, dev, not pull)
  if m then
    local n = #out
    out[n + 1] = dev; out[n + 2] = m.id; out[n + 3] = m.g; out[n + 4] = m.cmd
    out[n + 5] = m.data or ''; out[n + 6] = m.att
  end
end
reindex(sh)
local more = 0
if #devs >= batch or #ids >= batch then more = 1 end
return {'OK', STATS.expired, STATS.failed, more, out}
