-- cancel: a producer or operator withdraws a message that was not delivered yet.
-- ARGV[4..]: message id, caller's API key id ('' for an operator: any message).
-- Returns {'OK', shard, device} | {'CONFLICT', status} | {'NOT_FOUND'}.
local m = load_msg(ARGV[4])
local caller = ARGV[5] or ''
-- A producer may cancel what it submitted, and what was submitted without a key (over MQTT).
if not m or (caller ~= '' and m.key and m.key ~= caller) then return {'NOT_FOUND'} end
if m.st == 'NOT_DELIVERED' or (m.st == 'UNKNOWN' and attempts(m) == 0) then
  transition(m, 'CANCELLED', 'cancelled')
  wake(m.sh, m.dev, NOW) -- its window slot may be free now
  return {'OK', m.sh, m.dev}
end
return {'CONFLICT', m.st}
