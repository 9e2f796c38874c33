-- cancel: a producer or operator withdraws a message that was not delivered yet; the dispatcher also
-- uses it to fail a message that no broker would accept (its device id is not a valid topic level).
-- ARGV[4..]: message id, caller's API key id ('' for an operator: any message), and optionally the
-- outcome 'FAILED' with its history event (default: CANCELLED, 'cancelled').
-- Returns {'OK', shard, device} | {'CONFLICT', status} | {'NOT_FOUND'}.
local m = load_msg(ARGV[4])
local caller = ARGV[5] or ''
local outcome, event = 'CANCELLED', 'cancelled'
if ARGV[6] == 'FAILED' then outcome, event = 'FAILED', ARGV[7] or 'failed' end
-- A producer may cancel what it submitted, and what was submitted without a key (over MQTT).
if not m or (caller ~= '' and m.key and m.key ~= caller) then return {'NOT_FOUND'} end
if m.st == 'NOT_DELIVERED' or (m.st == 'UNKNOWN' and attempts(m) == 0) then
  transition(m, outcome, event)
  wake(m.sh, m.dev, NOW) -- its window slot may be free now
  return {'OK', m.sh, m.dev}
end
return {'CONFLICT', m.st}
