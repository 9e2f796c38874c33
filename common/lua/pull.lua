-- pull: a device asks for its next message over REST. The same decision as an MQTT send (order,
-- window, pacing, re-sends with the same id), so a device may mix both ways.
-- ARGV[4..]: device, shard, default window, default interval (ms), ack timeout (ms), longest retry
-- wait (ms), back-off factor, jitter (%), random seed.
-- Returns {'MSG', id, guarantee, command, data, attempt} or {'NONE', next due ms or ''}.
local dev, sh = ARGV[4], ARGV[5]
POL = {win = tonumber(ARGV[6]), iv = tonumber(ARGV[7]), ack_to = tonumber(ARGV[8]),
       retry_max = tonumber(ARGV[9]), backoff = tonumber(ARGV[10]), jitter = tonumber(ARGV[11]),
       seed = tonumber(ARGV[12]) % 2147483646 + 1, consumer = 's' .. sh}
local m = send_step(sh, dev, true)
reindex(sh)
if m then return {'MSG', m.id, m.g, m.cmd, m.data or '', m.att} end
return {'NONE', redis.call('ZSCORE', k_due(sh), dev) or ''}
