-- devinfo: a device's queue and pacing in one call (REST device summary).
-- ARGV[4]: device. Returns {queued, in flight, scheduled, next, last send, last ack, interval, window, mode}
-- with '' for values never set.
local dev = ARGV[4]
local q = k_queue(dev)
local len, pel = 0, 0
if redis.call('EXISTS', q) == 1 then
  len = redis.call('XLEN', q)
  pel = redis.call('XPENDING', q, GROUP)[1]
end
local ds = redis.call('HMGET', k_devstate(dev), 'next', 'last', 'ack')
local dc = redis.call('HMGET', k_devcfg(dev), 'iv', 'win', 'mode')
return {len - pel, pel, redis.call('ZCARD', k_sched(dev)), ds[1] or '', ds[2] or '', ds[3] or '', dc[1] or '',
        dc[2] or '', dc[3] or ''}
