#!lua name=drover
-- Drover's Redis function library (data layout 2), loaded once per connection with FUNCTION LOAD.
--
-- DESIGN
-- Every key of a device or a message lives in its shard's hash slot: names are
-- <prefix>{<shard>}<kind>..., and a message id carries its shard (id mod S = shard), so any node
-- finds a message from its id alone, and the functions of devices and messages touch the slots of the
-- KEYS they declare (one key, <prefix>{<shard>}, per shard involved). Batch functions take many shards
-- at once; on Redis Cluster a caller would split its batches by slot. lease declares no key and reads
-- every shard's lease (docs/architecture.md §3, "Redis Cluster", says how it would be split; §3 also
-- lists every key).
--
-- A message is one msgpack array (fields R_*) in a bucket hash <prefix>{s}m:<n div 64>, field
-- n mod 64, where n = id div S. The bucket counts its live (still to be delivered) messages in
-- field '#'; when that count drops to 0 the bucket expires after the retention period, so a finished
-- message costs its record and nothing else. History is a short array inside the record: one entry
-- per status change, the first send and the latest re-send.
--
-- Per device: a stream <prefix>{s}q:<dev> (group 'g', consumer 's<shard>') in acceptance order, each
-- entry carrying the id, the guarantee and the command; entries up to the group's last-delivered id
-- are exactly the messages in flight (an entry is acknowledged and deleted together when its message
-- leaves the queue). A hash <prefix>{s}d:<dev> holds pacing state, the last entry the group read
-- (so a pass finds the entries in flight with one read) and operator overrides.
--
-- Every status change is appended to the shard's status log <prefix>{s}log, which is both the event
-- history SSE clients resume from and the notification outbox: the function that made a change
-- claims its log entries for the calling node (group 'pub'); the node publishes them right after the
-- reply and acknowledges them (XACK); the shard owner claims what a dead node left (XAUTOCLAIM).
--
-- Time comes from Redis (TIME), never from the caller, so every node paces by the same clock.

-- The library's generation, raised whenever the data it writes would be misread by an older library
-- (a new record form, a new meaning of a field or a key), or an older library would write data this
-- one cannot rely on. Before loading its own library a node asks the loaded one (function
-- 'generation') and leaves a newer one in place (common/src/redis.c), so a late node of an older
-- release cannot put its library over data that library would misread or leave inconsistent.
-- Libraries before generation 1 have no such function and are replaced.
-- 2: deadlines in records may be kept in s, min, h or days (see the stored form).
-- 3: a status log entry is one field 'n' (see note_value).
-- 4: the ONLY_LAST index (see supersede): an older library would accept messages of an indexed
--    (device, command) without indexing them, and a later ONLY_LAST message would not cancel them.
local GENERATION = 4

-- Globals. A function reads a global (redis, tonumber, string, ...) through the empty, protected
-- globals table of Redis's Lua state and its __index metamethod: a miss, a metamethod and a second
-- lookup for every use of redis.call or tonumber. The library keeps the globals it uses in locals,
-- bound by the first call (while a library loads, Redis offers only a few of them). Every registered
-- callback is wrapped by api, which binds them.
local rcall, rpcall
local tonumber, type, unpack, ipairs, pairs, string, math, table, cmsgpack
local bound = false
local GC_PAUSE
local function bind()
  local G = _G
  rcall, rpcall = G.redis.call, G.redis.pcall
  tonumber, type, unpack, ipairs, pairs = G.tonumber, G.type, G.unpack, G.ipairs, G.pairs
  string, math, table, cmsgpack = G.string, G.math, G.table, G.cmsgpack
  -- a tuning only: a Redis that does not offer collectgarbage (reading a missing global raises an
  -- error) runs the library at Lua's default
  G.pcall(function() G.collectgarbage('setpause', GC_PAUSE) end)
  bound = true
end

local function api(fn)
  return function(keys, args)
    if not bound then bind() end
    return fn(keys, args)
  end
end

local GROUP, PUB = 'g', 'pub'
local BUCKET = 64
-- Deadlines are members of the shard's schedule {s}due, beside the devices (a device id never starts
-- with '#': it is an MQTT topic level), so one read of the schedule gives a pass both. One member
-- '#m<n>' stands for the deadlines of record bucket n: its score is at most the earliest deadline of
-- the bucket's live messages, and the bucket's count field '#' holds that score too (see LIVE_DIV), so
-- an accept learns it from the count it increments and adds to the schedule only when its message's
-- deadline comes earlier (with one default deliver-by, once per bucket), and a retiring message
-- leaves the member alone. The pass that reaches the member expires what is due in the bucket and
-- sets the member to the next deadline. Members '#<id>' (one per message) are an older library's.
local DL = '#'
-- The bucket field '#' = E * LIVE_DIV + live count (at most BUCKET), where E is the score of the
-- bucket's deadline member in the schedule, 0 when it has none.
local LIVE_DIV = 128
local function lcount(v) if v < 0 then return v end return v % LIVE_DIV end
local function lentry(v) if v < 0 then return 0 end return (v - v % LIVE_DIV) / LIVE_DIV end

local ST = {NOT_DELIVERED = 0, UNKNOWN = 1, DELIVERED = 2, COMPLETED = 3, COMPLETED_WITH_ERROR = 4,
            CANCELLED = 5, EXPIRED = 6, FAILED = 7, PURGED = 8}
local STN = {[0] = 'NOT_DELIVERED', [1] = 'UNKNOWN', [2] = 'DELIVERED', [3] = 'COMPLETED', [4] = 'COMPLETED_WITH_ERROR',
             [5] = 'CANCELLED', [6] = 'EXPIRED', [7] = 'FAILED', [8] = 'PURGED'}
-- Forward-only state machine (mirrored by common/src/status.c).
local RANK = {[0] = 0, [1] = 0, [2] = 1, [3] = 2, [4] = 2, [5] = 3, [6] = 3, [7] = 3, [8] = 3}
local FINAL = {[3] = true, [4] = true, [5] = true, [6] = true, [7] = true, [8] = true}
local GC = {NO = 'N', RECEIPT_CONFIRMATION = 'R', ONLY_LAST = 'L'}
local GN = {N = 'NO', R = 'RECEIPT_CONFIRMATION', L = 'ONLY_LAST'}
local EV = {accepted = 1, sent = 2, resent = 3, ack = 4, superseded = 5, deadline = 6, max_attempts = 7,
            cancelled = 8, purged = 9, refused = 10, unsent = 11, shown = 12}
local EVN = {'accepted', 'sent', 'resent', 'ack', 'superseded', 'deadline', 'max_attempts', 'cancelled', 'purged',
             'refused', 'unsent', 'shown'}

-- Record fields (positions in the msgpack array). Absent strings are '', absent numbers 0.
local R_DEV, R_G, R_CMD, R_DATA, R_ST, R_TS, R_CHG, R_ATT, R_TMP, R_PD = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
local R_TTL, R_MAX, R_NB, R_EXT, R_IDK, R_KEY, R_SID, R_SHOWN, R_DUE, R_SENT = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
local R_HIST, R_LIVE, R_HASPD, R_NOTE, R_FMT = 21, 22, 23, 24, 25
-- Kept only while the message waits for its ack: 1 when its last send saw more of the device's queue
-- (another entry in flight, or one behind it), so the ack wakes the device without asking the queue.
local R_MORE = 26
-- In memory only (stored inside R_MORE, see pack): when the device may be sent to next, as this
-- message's send set it, so the ack wakes the device at that time without reading its d: hash. Set
-- only where another send rarely moves that time before the ack: without pacing it is the send's
-- own time; with window 1 only a guarantee-NO message can go out in between, and then the pass the
-- ack's wake brings finds the device paced and schedules it for later.
local R_NXT = 27
-- 1 while the message is in its device's ONLY_LAST index (see supersede); stored in the record's 28th
-- place, after two placeholders when R_MORE is absent, so the record stays a msgpack array. (A
-- library of generation 3 reads such a record and drops the field on its next save; an index entry
-- left behind is dropped by the next supersede that reads it.)
local R_OI = 28

-- ---- call context ------------------------------------------------------------------------------

-- Lua's collector starts a cycle when its heap has grown to 'pause' % of what the last cycle left
-- (default 200). The library's live data is small (about 0.7 MB: code, the number and tag caches)
-- and every call leaves garbage behind, so at the default a cycle starts every 0.7 MB allocated and
-- most of its work is marking the same live data again: 5.6 % of Redis's instructions per command.
-- At 1000 the heap grows to about 7 MB between cycles and the collector takes 2.8 %
-- (docs/benchmarks.md, "Redis instructions per command: Lua's collector"). Redis itself still steps
-- the collector every 50 calls, which bounds the garbage whatever the pause. Set by bind.
GC_PAUSE = 1000

-- Every function starts with ARGV[1] = key prefix, ARGV[2] = shard count, ARGV[3] = retention (s),
-- ARGV[4] = calling node (log consumer name); its own arguments follow.
-- Numbers that Redis or the library's own callers format (those arguments, TIME, scores, the live
-- count of a bucket) become numbers with '+ 0': tonumber is a C call that converts a string twice
-- (Lua 5.1 checks it, then converts it). Values from anywhere else (device input, hash fields an
-- operator may set, queue entries) go through tonumber, which answers nil rather than failing the
-- call, so a foreign value is skipped instead of stopping every pass over its shard.
local function ctx(args)
  local t = rcall('TIME')
  return {P = args[1], S = args[2] + 0, ret = args[3] + 0, rets = args[3], node = args[4],
          now = t[1] * 1000 + math.floor(t[2] / 1000),
          logged = {}, first_log = {}, earlier = {}, due_min = {}, live = {}, made = {}}
end

-- Numbers become strings here, never by concatenation or as redis.call arguments: Lua formats a
-- number with '%.14g' and Redis an argument with '%.17g', both through the C library's floating-point
-- printer, several times the cost of '%d'. Small values (shards, bucket fields, counts) are formatted
-- once and kept, as are the shard tags of key names.
local SMALL, SMALL_MAX = {}, 4096
local function s(n)
  if n >= 0 and n < SMALL_MAX then
    local v = SMALL[n]
    if not v then
      v = string.format('%d', n)
      SMALL[n] = v
    end
    return v
  end
  return string.format('%d', n)
end
local TAG = {}
local function key(c, sh, name)
  local t = TAG[sh]
  if not t then
    t = '{' .. s(tonumber(sh)) .. '}'
    TAG[sh] = t
  end
  return c.P .. t .. name
end

-- ---- records -----------------------------------------------------------------------------------

local function locate(c, id)
  local sh = id % c.S
  local n = (id - sh) / c.S
  return sh, key(c, sh, 'm:' .. s(math.floor(n / BUCKET))), s(n % BUCKET)
end

-- The schedule member of the deadlines of id's bucket (see DL).
local function dl_member(c, id)
  local sh = id % c.S
  return DL .. 'm' .. s(math.floor((id - sh) / c.S / BUCKET))
end

-- Stored form. In memory every time is absolute (ms), except that the last log entry id and the
-- history stay in their stored form until needed (see unpack_record); stored, a record is compact
-- (R_FMT set), because a finished message is kept for the retention period and most of it is
-- timestamps:
--  - changed, last send and next re-send are ms after acceptance ('' for a time never set; the next
--    re-send of a message past NOT_DELIVERED is dropped: there is none);
--  - a deadline after the acceptance is -(time after acceptance, in the largest of ms, s, min, h and
--    days that divides it exactly) - 1, so the default day is one byte; one before the acceptance stays
--    absolute; 0 is none;
--  - the last log entry id '<ms>-<seq>' is one number, (ms - accepted) * 1024 + seq ('' for none; the
--    string itself when seq >= 1024);
--  - the history leaves out its first entry, always {accepted, initial status, 0, 0}.
-- R_FMT = h + 2 * u: h = 1 when the history left its first entry out (2: whole), u the deadline's unit
-- (index into DL_UNIT; forms 1 and 2, unit ms, are those of generation 1).
-- A record without R_FMT (written before) holds absolute times and its full history; it is read as it
-- is and written back compact.
local NOTE_SEQ = 1024
local DL_UNIT = {[0] = 1, 1000, 60000, 3600000, 86400000}

local function rel(t, ts)
  if t == 0 then return '' end
  return t - ts
end

local function abs(v, ts)
  if v == '' then return 0 end
  return ts + v
end

local function first_status(r) return r[R_G] == 'N' and ST.UNKNOWN or ST.NOT_DELIVERED end

local function pack(r)
  local ts = r[R_TS]
  -- one constructor, sized once (a table grown field by field is rehashed at 1, 2, 4, 8 and 16)
  local v = {r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15],
             r[16], r[17], r[18], r[19], r[20], r[21], r[22], r[23], r[24]}
  v[R_CHG] = r[R_CHG] - ts
  v[R_SENT] = rel(r[R_SENT], ts)
  v[R_DUE] = RANK[r[R_ST]] > 0 and '' or rel(r[R_DUE], ts)
  local dl, u = r[R_TTL], 0
  if dl >= ts then
    local d = dl - ts
    for i = #DL_UNIT, 1, -1 do
      if d % DL_UNIT[i] == 0 then u = i; break end
    end
    v[R_TTL] = -(d / DL_UNIT[u]) - 1
  end
  local note = r[R_NOTE]
  if type(note) == 'string' then -- a number is the stored form still (see unpack_record)
    local ms, seq = string.match(note, '^(%d+)-(%d+)$')
    if ms and tonumber(seq) < NOTE_SEQ then v[R_NOTE] = (tonumber(ms) - ts) * NOTE_SEQ + tonumber(seq) end
  end
  local h = r[R_HIST]
  if r[R_FMT] then -- the history is in its stored form already (see unpack_record)
    v[R_FMT] = 1 + 2 * u
  elseif h[1] == EV.accepted and h[2] == first_status(r) and h[3] == 0 and h[4] == 0 then
    local rest = {}
    for i = 5, #h do rest[i - 4] = h[i] end
    v[R_HIST] = rest
    v[R_FMT] = 1 + 2 * u
  else
    v[R_FMT] = 2 + 2 * u -- the first entry is not the implicit one (never written so; kept whole if it were)
  end
  -- R_MORE: 1, or 2 + (R_NXT - accepted) when the next send time is known (never before acceptance);
  -- a library that knows only 1 reads any other value as "not known" and asks Redis, as before.
  if r[R_MORE] == 1 and RANK[r[R_ST]] == 0 then
    v[R_MORE] = r[R_NXT] and 2 + r[R_NXT] - ts or 1
  end
  if r[R_OI] then
    if not v[R_MORE] then v[R_MORE] = false end
    v[27], v[R_OI] = false, 1
  end
  return cmsgpack.pack(v)
end

local function unpack_record(raw)
  local r = cmsgpack.unpack(raw)
  local fmt = r[R_FMT]
  if not fmt then return r end
  local ts = r[R_TS]
  r[R_CHG] = ts + r[R_CHG]
  r[R_SENT] = abs(r[R_SENT], ts)
  r[R_DUE] = abs(r[R_DUE], ts)
  local u = math.floor((fmt - 1) / 2)
  if r[R_TTL] < 0 then r[R_TTL] = ts + (-r[R_TTL] - 1) * DL_UNIT[u] end
  local more = r[R_MORE]
  if more and more >= 2 then
    r[R_MORE], r[R_NXT] = 1, ts + more - 2
  elseif more == false then
    r[R_MORE] = nil
  end
  if r[27] == false then r[27] = nil end
  -- Left in their stored form, since most loads never look at them (history_of and note_of read
  -- them): the last log entry id as a number, and the history without its implicit first entry, which
  -- R_FMT = true marks in memory (hist appends to either form alike).
  r[R_FMT] = fmt % 2 == 1 or nil
  return r
end

-- The id of the last log entry of record r ('<ms>-<seq>', '' for none).
local function note_of(r)
  local note = r[R_NOTE]
  if type(note) ~= 'number' then return note end
  local seq = note % NOTE_SEQ
  return s(r[R_TS] + (note - seq) / NOTE_SEQ) .. '-' .. s(seq)
end

-- The whole history of record r, its first entry included.
local function history_of(r)
  if not r[R_FMT] then return r[R_HIST] end
  local h, rest = {EV.accepted, first_status(r), 0, 0}, r[R_HIST]
  for i = 1, #rest do h[i + 4] = rest[i] end
  return h
end

-- Loads message id (a number) as {id, sh, bk, f, r = record array}, or nil. The same read takes the
-- bucket's live count, kept for the call in c.live (see retire), so retiring a message costs no call
-- of its own: the count is written with the record.
local function load(c, id)
  if not id or id < 1 or id ~= math.floor(id) then return nil end
  local sh, bk, f = locate(c, id)
  local v = rcall('HMGET', bk, f, '#')
  if not v[1] then return nil end
  if c.live[bk] == nil then c.live[bk] = v[2] and v[2] + 0 or 0 end
  return {id = id, sh = sh, bk = bk, f = f, r = unpack_record(v[1])}
end

-- Writes m's record, and the bucket's live count when m changed it (retire). The count in c.live is
-- the bucket's true count from the first read of the call on: every change of it goes through it and
-- is written by the save that follows, before anything else reads the field.
local function save(m)
  local live = m.count
  if live then
    m.count = nil
    rcall('HSET', m.bk, m.f, pack(m.r), '#', s(live[m.bk]))
  else
    rcall('HSET', m.bk, m.f, pack(m.r))
  end
end

local function attempts(m) return m.r[R_ATT] end

-- History: {event, status, ms since accepted, attempt} per entry; a re-send replaces the previous
-- re-send entry, so a stuck message's history stays short.
local function hist(c, m, ev)
  local h, r = m.r[R_HIST], m.r
  local n = #h
  if ev == EV.resent and n >= 4 and h[n - 3] == EV.resent then
    h[n - 2], h[n - 1], h[n] = r[R_ST], c.now - r[R_TS], r[R_ATT]
    return
  end
  h[n + 1], h[n + 2], h[n + 3], h[n + 4] = ev, r[R_ST], c.now - r[R_TS], r[R_ATT]
end

-- ---- status log / notifications ----------------------------------------------------------------

-- The status log's group is created by the first claim that finds none (see claim), so writing a
-- change costs no existence check.
local function log_key(c, sh) return key(c, sh, 'log') end

-- True when Redis answered a redis.pcall with an error (for example NOGROUP).
local function failed(r) return type(r) == 'table' and r.err ~= nil end

-- A log entry is one field 'n' holding the change's eight values (NOTE_*), each written as
-- <length>:<bytes> (a device id or a key may hold any byte): one field instead of eight pairs makes
-- the append, its copy in the AOF and the claim's read of it several times cheaper. Entries of
-- generation 2 and before hold the pairs i d s t p x k a; both forms are read
-- (services/ingress/sse.c reads them too).
local NOTE_ID, NOTE_DEV, NOTE_ST, NOTE_TMP, NOTE_PD, NOTE_EXT, NOTE_KEY, NOTE_AFTER = 1, 2, 3, 4, 5, 6, 7, 8

local function note_value(v)
  return s(#v[1]) .. ':' .. v[1] .. s(#v[2]) .. ':' .. v[2] .. s(#v[3]) .. ':' .. v[3] .. s(#v[4]) .. ':' ..
         v[4] .. s(#v[5]) .. ':' .. v[5] .. s(#v[6]) .. ':' .. v[6] .. s(#v[7]) .. ':' .. v[7] .. s(#v[8]) ..
         ':' .. v[8]
end

-- The eight values of a log entry's field list f, in either form; nil when it is neither (nothing
-- the library writes: such an entry is confirmed unpublished where it is met).
local function note_fields(f)
  if f[1] ~= 'n' then
    if not f[6] then return nil end
    return {f[2], f[4], f[6], f[8] or '', f[10] or '', f[12] or '', f[14] or '', f[16] or ''}
  end
  local v, str, at = {}, f[2], 1
  for k = 1, 8 do
    local colon = string.find(str, ':', at, true)
    local len = colon and tonumber(string.sub(str, at, colon - 1))
    if not len or colon + len > #str then return nil end
    v[k] = string.sub(str, colon + 1, colon + len)
    at = colon + len + 1
  end
  return v
end

-- Appends one note (9 strings, see claim) from a log entry {id, fields} of shard sh to out. made:
-- the values of the entries this call wrote, by shard and entry id (c.made), so those need no
-- decoding. Returns false for an entry that holds no note (see note_fields).
local function add_note(out, sh, e, made)
  local v = made and made[sh] and made[sh][e[1]] or note_fields(e[2])
  if not v then return false end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = s(sh), e[1], v[NOTE_ID], v[NOTE_DEV], v[NOTE_ST]
  out[n + 6], out[n + 7], out[n + 8], out[n + 9] = v[NOTE_TMP], v[NOTE_PD], v[NOTE_EXT], v[NOTE_AFTER]
  return true
end

-- Another node's unconfirmed note younger than this is probably on its way to the broker: the next
-- change of the same message waits for it (see notify) instead of overtaking it.
local FRESH_MS = 3000

-- Logs m's change to st. A message's notifications must reach its producer in order, but each is
-- published by the node that made the change. So when the message's previous change is still
-- unconfirmed:
--  - ours: it is returned again before the new one (if it is on its way to the broker already, or was
--    published and only its confirmation got lost, the node knows and does not publish it twice:
--    common/src/notes.c);
--  - another node's, for FRESH_MS or longer (the node died, or lost the reply that claimed it): this
--    call takes it over and returns it before the new one;
--  - another node's, younger: that node is publishing it now; the new entry names it ('a'), and the
--    calling node publishes the new one only once that one is confirmed or has gone stale.
-- A producer may see a status twice, never an older one after a newer one.
-- from: the status the previous change logged (a repeat of it, as for an idempotent retry, simply
-- replaces a previous entry that is still unconfirmed).
local function notify(c, m, st, from)
  local r = m.r
  local lk = log_key(c, m.sh)
  local prev = note_of(r)
  local after = ''
  if prev and prev ~= '' then
    local p = rpcall('XPENDING', lk, PUB, prev, prev, '1')
    if not failed(p) and p[1] and from == st then
      rcall('XACK', lk, PUB, prev)
    elseif not failed(p) and p[1] and p[1][2] ~= c.node and p[1][3] < FRESH_MS then
      after = prev
    elseif not failed(p) and p[1] then
      -- claimed afresh even when it is ours: its idle time starts again, so the shard owner's reclaim
      -- leaves it to this node, which publishes (or confirms) it before the new change
      local e = rcall('XCLAIM', lk, PUB, c.node, '0', prev)[1]
      if e then add_note(c.earlier, m.sh, e) end
    end
  end
  local v = {s(m.id), r[R_DEV], STN[st], r[R_HASPD] == 1 and s(r[R_TMP]) or '', r[R_PD], s(r[R_EXT]), r[R_KEY],
             after}
  r[R_NOTE] = rcall('XADD', lk, '*', 'n', note_value(v))
  local made = c.made[m.sh] -- by shard: logs of two shards give the same entry ids
  if not made then
    made = {}
    c.made[m.sh] = made
  end
  made[r[R_NOTE]] = v
  c.logged[m.sh] = (c.logged[m.sh] or 0) + 1
  if not c.first_log[m.sh] then c.first_log[m.sh] = r[R_NOTE] end
end

-- Claims this call's log entries for the calling node and appends them to out as flat groups of
-- 9: shard, log entry id, message id, device, status, tmpId, producerDeviseId, ext, and the entry it
-- must wait for ('' for none). Earlier changes taken over by notify come first.
-- One XREADGROUP reads every log the call wrote (up to CLAIM_LOGS at a time, in shard order), so a
-- batch spread over many shards claims with one call rather than one per shard; each log yields at
-- most as many entries as the most any log got in this call (a log whose group lags behind gives
-- older unclaimed entries first, as a read of that log alone would). When a log has no group yet
-- (or lost it), the read fails as a whole and the logs are claimed one by one, creating the group.
local CLAIM_LOGS = 500

-- The stream entry id just before entry id e ('<ms>-<seq>').
local function id_before(e)
  local ms, seq = string.match(e, '^(%d+)-(%d+)$')
  if tonumber(seq) > 0 then return ms .. '-' .. s(tonumber(seq) - 1) end
  return s(tonumber(ms) - 1) .. '-18446744073709551615'
end

local function claim_one(c, sh, n, out)
  local lk = key(c, sh, 'log')
  local r = rpcall('XREADGROUP', 'GROUP', PUB, c.node, 'COUNT', s(n), 'STREAMS', lk, '>')
  if failed(r) then
    -- A new log, or one whose group was lost: the group starts just before this call's first entry
    -- (what an older group had not confirmed is beyond recovery; a new log holds only this call's).
    rcall('XGROUP', 'CREATE', lk, PUB, id_before(c.first_log[sh]))
    r = rcall('XREADGROUP', 'GROUP', PUB, c.node, 'COUNT', s(n), 'STREAMS', lk, '>')
  end
  if r then
    local es = r[1][2]
    for i = 1, #es do add_note(out, sh, es[i], c.made) end
  end
end

local function claim(c, out)
  local earlier = c.earlier
  for i = 1, #earlier do out[#out + 1] = earlier[i] end
  local shs, most = {}, 0
  for sh, n in pairs(c.logged) do
    shs[#shs + 1] = sh
    if n > most then most = n end
  end
  table.sort(shs)
  for from = 1, #shs, CLAIM_LOGS do
    local to = math.min(#shs, from + CLAIM_LOGS - 1)
    local a, of = {'GROUP', PUB, c.node, 'COUNT', s(most), 'STREAMS'}, {}
    for i = from, to do
      local lk = key(c, shs[i], 'log')
      a[#a + 1] = lk
      of[lk] = shs[i]
    end
    for _ = from, to do a[#a + 1] = '>' end
    local r = rpcall('XREADGROUP', unpack(a))
    if failed(r) then
      for i = from, to do claim_one(c, shs[i], c.logged[shs[i]], out) end
    elseif r then
      for i = 1, #r do
        local sh, es = of[r[i][1]], r[i][2]
        for j = 1, #es do add_note(out, sh, es[j], c.made) end
      end
    end
  end
  return out
end

-- ---- queue and schedule helpers ----------------------------------------------------------------

local function qkey(c, sh, dev) return key(c, sh, 'q:' .. dev) end
local function dkey(c, sh, dev) return key(c, sh, 'd:' .. dev) end

-- True when stream entry id a ('<ms>-<seq>') is not after b.
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) <= tonumber(bs))
end

-- An empty device queue keeps its group for an hour, so a device with steady work never re-creates it.
-- A device has work exactly while it is in the shard schedule {s}due, so the queue's expiry follows
-- the schedule: it is set where a device leaves the schedule (idle) and removed where it enters it
-- (schedule, wake). A queue that gets an entry while its device is scheduled never needs a PERSIST.
local QUEUE_IDLE_S = 3600

-- The queue's group is created by the first dispatch that finds none (see send_step). The caller
-- makes the device due (wake), which keeps the queue from expiring.
local function enqueue(c, m)
  local r = m.r
  r[R_SID] = rcall('XADD', qkey(c, m.sh, r[R_DEV]), '*', 'i', s(m.id), 'g', r[R_G], 'c', r[R_CMD])
end

-- Removes a queue entry that is done with. The device stays scheduled: whoever decides that it has
-- nothing left (idle) lets the queue expire.
local function drop_entry(c, q, sid)
  rpcall('XACK', q, GROUP, sid) -- no group yet: the entry was never read
  rcall('XDEL', q, sid)
end

-- Sets a device's next due time (lt: only if earlier). Returns true when the device was not scheduled,
-- that is, had no work: its queue may be expiring and stops doing so. The earliest time set in the
-- call is kept per shard, for the next-pass time dispatch returns.
local function schedule(c, sh, dev, t, lt)
  local added
  if lt then
    added = rcall('ZADD', key(c, sh, 'due'), 'LT', s(t), dev)
  else
    added = rcall('ZADD', key(c, sh, 'due'), s(t), dev)
  end
  local h = c.due_min[sh]
  if not h or t < h then c.due_min[sh] = t end
  if added == 1 then
    rcall('PERSIST', qkey(c, sh, dev))
    return true
  end
  return false
end

-- Makes a device due no later than t; true when it was not scheduled (see schedule).
local function wake(c, sh, dev, t)
  return schedule(c, sh, dev, t, true)
end

-- A device with nothing queued or scheduled leaves the schedule; its empty queue expires (with its
-- group) unless work comes back within QUEUE_IDLE_S.
local function idle(c, sh, dev)
  rcall('ZREM', key(c, sh, 'due'), dev)
  rcall('EXPIRE', qkey(c, sh, dev), QUEUE_IDLE_S)
end

-- Puts a device that receives work or settings in the shard's name index {s}dx (all scores 0, so it
-- is ordered by name), which the console's device list pages through; con_devices drops the names
-- that have neither work nor state left. Called where a device can first appear: devset, and accept
-- when the device was not scheduled (a scheduled device has work, so con_devices kept its name).
local function index_dev(c, sh, dev)
  rcall('ZADD', key(c, sh, 'dx'), '0', dev)
end

-- Takes a message out of its device queue (stream entry, or the not-before schedule).
local function unqueue(c, m)
  local r = m.r
  if r[R_SID] ~= '' then
    drop_entry(c, qkey(c, m.sh, r[R_DEV]), r[R_SID])
    r[R_SID] = ''
  elseif r[R_NB] > 0 then
    if rcall('ZREM', key(c, m.sh, 'sc:' .. r[R_DEV]), s(m.id)) == 1 then
      rcall('HINCRBY', dkey(c, m.sh, r[R_DEV]), 'sc', '-1')
    end
  end
end

-- The message no longer needs delivery: it stops counting as live in its bucket, which expires
-- retention seconds after its last live message retired.
local function retire(c, m)
  local r = m.r
  if r[R_LIVE] == 1 then
    r[R_LIVE] = 0
    local n = c.live[m.bk]
    if lcount(n) > 0 then n = n - 1 end
    c.live[m.bk] = n
    m.count = c.live -- written by the save that follows
    if lcount(n) <= 0 then rcall('EXPIRE', m.bk, c.rets) end
    if r[R_IDK] ~= '' then rcall('EXPIRE', key(c, m.sh, 'ik:' .. r[R_IDK]), c.rets) end
    if r[R_OI] then
      rcall('ZREM', key(c, m.sh, 'oi:' .. r[R_DEV]), r[R_CMD] .. '\0' .. s(m.id))
      r[R_OI] = nil
    end
    -- its deadline member (the bucket's, see DL) stays: the pass that reaches it finds no live message
  else
    rcall('EXPIRE', m.bk, c.rets, 'GT') -- a later change extends an expiring bucket
  end
end

local function pending(r) return r[R_ST] == 0 or (r[R_ST] == 1 and r[R_ATT] == 0) end

-- Moves m to status st (the caller checked the transition), records it, logs it, frees the queue
-- slot when the message leaves the pending statuses, and saves the record.
local function transition(c, m, st, ev)
  local r = m.r
  local was_pending = pending(r)
  local from = r[R_ST]
  r[R_ST] = st
  r[R_CHG] = c.now
  hist(c, m, ev)
  notify(c, m, st, from)
  if was_pending then unqueue(c, m) end
  retire(c, m)
  save(m)
end

-- ---- sending (dispatch and REST pull) ----------------------------------------------------------

-- Park-Miller generator seeded by the caller: the jitter must not depend on Redis's randomness.
local function rand(pol)
  pol.seed = (pol.seed * 16807) % 2147483647
  return pol.seed / 2147483647
end

local function retry_delay(pol, att)
  local d = pol.ack_to * (pol.backoff ^ (att - 1))
  if d > pol.retry_max then d = pol.retry_max end
  local j = d * pol.jitter / 100
  return math.floor(d - j + 2 * j * rand(pol))
end

local function policy(args, i)
  return {win = tonumber(args[i]), iv = tonumber(args[i + 1]), ack_to = tonumber(args[i + 2]),
          retry_max = tonumber(args[i + 3]), backoff = tonumber(args[i + 4]), jitter = tonumber(args[i + 5]),
          seed = tonumber(args[i + 6]) % 2147483646 + 1}
end

-- A d: hash without overrides expires retention_s after the device's last activity. Refreshing the
-- expiry costs a call, so a write refreshes it only when the last refresh (field 'x', Redis time in
-- ms) is more than a quarter of the retention old, and then to 1.25 x the retention: the hash lives
-- at least retention_s after its last write and at most a quarter longer. cfg, x: the hash's fields.
local function dev_refresh(c, cfg, x)
  return not cfg and (tonumber(x) or 0) + c.ret * 250 <= c.now
end

-- Writes fields (a flat list of names and values) to d: hash dk, refreshing its expiry as above.
local function dev_write(c, dk, cfg, x, fields)
  if dev_refresh(c, cfg, x) then
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = s(c.now)
    rcall('HSET', dk, unpack(fields))
    rcall('EXPIRE', dk, s(c.ret + math.ceil(c.ret / 4)))
  else
    rcall('HSET', dk, unpack(fields))
  end
end

-- One decision for one device: promote due scheduled messages, fail or pick re-sends, take the next
-- entry when the window (or guarantee NO) allows, and, when pacing allows, record the send. Keeps the
-- device's entry in the shard schedule up to date. Returns the message sent (or nil) and counts.
-- allow_send: true (REST pull), or 'mqtt' (the dispatcher: devices in pull mode only get bookkeeping).
local function send_step(c, sh, dev, allow_send, pol, stats)
  local q, dk = qkey(c, sh, dev), dkey(c, sh, dev)
  local dv = rcall('HMGET', dk, 'n', 'iv', 'win', 'cfg', 'sc', 'mode', 'x', 'r')
  -- Devices in pull mode fetch their messages over REST; the dispatcher only keeps their schedule.
  if allow_send == 'mqtt' then allow_send = dv[6] ~= 'pull' end
  local nxt = tonumber(dv[1]) or 0
  local iv = tonumber(dv[2]) or pol.iv
  local win = tonumber(dv[3]) or pol.win
  local scheduled = tonumber(dv[5]) or 0

  if scheduled > 0 then
    local sck = key(c, sh, 'sc:' .. dev)
    for _, id in ipairs(rcall('ZRANGEBYSCORE', sck, '-inf', c.now, 'LIMIT', 0, 100)) do
      rcall('ZREM', sck, id)
      scheduled = rcall('HINCRBY', dk, 'sc', '-1')
      local m = load(c, tonumber(id))
      if m and pending(m.r) then
        enqueue(c, m)
        save(m)
      end
    end
    -- A scheduled device's queue does not expire (see QUEUE_IDLE_S); one left expiring by an older
    -- library, which let an emptied queue expire whether or not its device stayed scheduled, is
    -- repaired here.
    rcall('PERSIST', q)
  end

  -- In flight: the entries up to the group's last-delivered id (see DESIGN), oldest first. One read
  -- takes them, the next entry and the one after it, so taking the next entry and looking past it
  -- need no further read; a read shorter than asked for ends at the end of the queue.
  -- Which entries are in flight: every send records in the d: hash ('r') the last entry the group
  -- has read; entries up to it that still exist are exactly those in flight (the others were
  -- acknowledged and deleted). Without 'r' (a new device, an expired hash, data of an older library)
  -- the group's pending count tells, and the pending entry with the greatest id serves as 'r'.
  local inflight_n, entries, complete = 0, {}, false
  local last = dv[8]
  if last then
    local count = win + 2
    entries = rcall('XRANGE', q, '-', '+', 'COUNT', s(count))
    complete = #entries < count
    while true do
      while entries[inflight_n + 1] and id_le(entries[inflight_n + 1][1], last) do inflight_n = inflight_n + 1 end
      if complete or #entries >= inflight_n + 2 then break end
      local more = rcall('XRANGE', q, '(' .. entries[#entries][1], '+', 'COUNT', s(count))
      for _, e in ipairs(more) do entries[#entries + 1] = e end
      complete = #more < count
    end
  else
    local p = rpcall('XPENDING', q, GROUP)
    if not failed(p) then
      inflight_n = p[1]
      last = p[3] or '0-0'
      entries = rcall('XRANGE', q, '-', '+', 'COUNT', s(inflight_n + 2))
      complete = #entries < inflight_n + 2
    elseif rcall('XLEN', q) > 0 then
      -- a queue no pass has seen yet: its group starts before its first entry
      rcall('XGROUP', 'CREATE', q, GROUP, '0')
      last = '0-0'
      entries = rcall('XRANGE', q, '-', '+', 'COUNT', '2')
      complete = #entries < 2
    end
  end
  local qlen = #entries -- 0 exactly when the queue is empty
  local dirty = scheduled > 0 -- the queue may change below; its length is read then at the end
  local inflight, retry, soonest = 0, nil, nil
  for i = 1, inflight_n do
    local e = entries[i]
    if not e then break end
    local m = load(c, tonumber(e[2][2]))
    if not m or not pending(m.r) then
      drop_entry(c, q, e[1]) -- finished elsewhere; nothing left to send
      dirty = true
    else
      local r = m.r
      if r[R_TTL] > 0 and r[R_TTL] <= c.now then
        dirty = true
        transition(c, m, ST.EXPIRED, EV.deadline)
        stats.expired = stats.expired + 1
      elseif r[R_DUE] <= c.now and r[R_MAX] > 0 and r[R_ATT] >= r[R_MAX] then
        dirty = true
        transition(c, m, ST.FAILED, EV.max_attempts)
        stats.failed = stats.failed + 1
      else
        inflight = inflight + 1
        if r[R_DUE] <= c.now and not retry then
          retry = m
        elseif not soonest or r[R_DUE] < soonest then
          soonest = r[R_DUE]
        end
      end
    end
  end
  local at = inflight_n + 1 -- position in entries of the next entry to take
  local nexte = entries[at]
  -- The entry after entries[at], or nil at the end of the queue.
  local function after()
    if entries[at + 1] or complete then return entries[at + 1] end
    local nx = rcall('XRANGE', q, '(' .. entries[at][1], '+', 'COUNT', '1')[1]
    if nx then entries[at + 1] = nx else complete = true end
    return nx
  end

  local sent = nil
  if allow_send and c.now >= nxt then
    local m = retry
    if not m then
      for _ = 1, 64 do
        if not nexte or (inflight >= win and nexte[2][4] ~= 'N') then break end
        local rd = rpcall('XREADGROUP', 'GROUP', GROUP, 's' .. s(sh), 'COUNT', '1', 'STREAMS', q, '>')
        if failed(rd) then
          -- The queue expired while idle and came back without its group: nothing of it was read.
          rcall('XGROUP', 'CREATE', q, GROUP, '0')
          rd = rcall('XREADGROUP', 'GROUP', GROUP, 's' .. s(sh), 'COUNT', '1', 'STREAMS', q, '>')
        end
        if not rd then
          -- 'r' was behind the group (a send by an older library): count again at the next pass.
          rcall('HDEL', dk, 'r')
          dv[8], last, nexte = nil, nil, nil
          break
        end
        local e = rd[1][2][1]
        last = e[1]
        -- The group read what the first read saw as the next entry, unless 'r' was behind the group:
        -- then read on from e (the group's position is e now, so 'r' is right again from here).
        if e[1] ~= nexte[1] then entries, at, complete = {e}, 1, false end
        local cand = load(c, tonumber(e[2][2]))
        if cand and pending(cand.r) then
          if cand.r[R_TTL] > 0 and cand.r[R_TTL] <= c.now then
            dirty = true
            transition(c, cand, ST.EXPIRED, EV.deadline)
            stats.expired = stats.expired + 1
          else
            m = cand
            if cand.r[R_G] ~= 'N' then inflight = inflight + 1 end
          end
        else
          drop_entry(c, q, e[1])
          dirty = true
        end
        nexte = after()
        if m then break end
        at = at + 1
      end
    end
    if m then
      local r = m.r
      r[R_ATT] = r[R_ATT] + 1
      r[R_SENT] = c.now
      r[R_DUE] = c.now + retry_delay(pol, r[R_ATT])
      hist(c, m, r[R_ATT] == 1 and EV.sent or EV.resent)
      if r[R_G] == 'N' then
        -- Fire and forget: sent once, when pacing allows (Duster dropped these instead).
        dirty = true
        unqueue(c, m)
        retire(c, m)
      else
        if not soonest or r[R_DUE] < soonest then soonest = r[R_DUE] end
        r[R_MORE] = (nexte ~= nil or inflight > 1) and 1 or nil
        r[R_NXT] = (r[R_MORE] and (win <= 1 or iv == 0)) and c.now + iv or nil
      end
      save(m)
      nxt = c.now + iv
      m.iv = iv
      local f = {'n', s(nxt), 'l', s(c.now)}
      if last and last ~= dv[8] then f[5], f[6] = 'r', last end
      dev_write(c, dk, dv[4], dv[7], f)
      sent = m
    elseif last and dv[8] and last ~= dv[8] then
      dev_write(c, dk, dv[4], dv[7], {'r', last}) -- entries were read, none sent
    end
  end

  -- When does this device need attention next? Nothing queued: it leaves the schedule.
  if dirty then qlen = rcall('XLEN', q) end
  if qlen == 0 and scheduled <= 0 then
    idle(c, sh, dev)
    return sent
  end
  local due = nil
  local function consider(t) if not due or t < due then due = t end end
  local can_take = nexte ~= nil and (inflight < win or nexte[2][4] == 'N')
  if allow_send then
    if (retry and not sent) or can_take then consider(math.max(c.now, nxt)) end
    if soonest then consider(math.max(soonest, nxt)) end
  end
  if scheduled > 0 then
    local first = rcall('ZRANGE', key(c, sh, 'sc:' .. dev), '0', '0', 'WITHSCORES')
    if first[2] then consider(tonumber(first[2])) end
  end
  if not due then due = c.now + pol.retry_max end
  schedule(c, sh, dev, due, false)
  return sent
end

-- MQTT 5 Message Expiry Interval (s) of a send just recorded, 0 for none. A copy must be gone from an
-- offline device's broker session before the next copy is made, and a copy delivered at the last
-- moment must still come at least the device's pacing interval before that next copy: the budget is
-- the time to the re-send this send scheduled (jitter drawn, per-device settings applied) less the
-- interval. A copy must not reach the device after the message's deadline either. 2 s come off both:
-- the broker stamps a message with whole seconds and keeps it up to 1 s past its expiry, and the
-- dispatcher's client may round a wait in its queue up by 1 s more. At least 1 s (0 would mean none):
-- then the guarantee cannot hold (docs/protocol.md §10.3). Guarantee NO is never re-sent: none.
local function send_expiry(c, m)
  local r = m.r
  if r[R_G] == 'N' then return 0 end
  local budget = r[R_DUE] - c.now - (m.iv or 0) - 2000
  if r[R_TTL] > 0 and r[R_TTL] - c.now - 2000 < budget then budget = r[R_TTL] - c.now - 2000 end
  return math.max(1, math.floor(budget / 1000))
end

-- What a send needs; the time it was recorded (Redis's clock) becomes the message's currentTimestamp,
-- so consecutive sends to a device show the pacing whichever node published them.
local function send_out(c, m, out)
  local r, n = m.r, #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = s(m.id), r[R_DEV], GN[r[R_G]], r[R_CMD], r[R_DATA]
  out[n + 6], out[n + 7], out[n + 8], out[n + 9] = s(r[R_ATT]), s(r[R_SENT]), s(r[R_TS]), s(send_expiry(c, m))
  return out
end

-- How long until the shard needs a pass (ms from now, 0 when due): the earliest due device or
-- deadline, or -1 when nothing is scheduled. Relative, so callers schedule by their own monotonic
-- clock and never compare Redis time with theirs.
-- Deadlines written by an older library sit in their own set {s}exp: each call moves up to 100 of
-- them into the schedule (the dispatcher asks every second for every shard it owns).
local function shard_head(c, sh)
  local dk = key(c, sh, 'due')
  local ek = key(c, sh, 'exp')
  local old = rcall('ZRANGE', ek, 0, 99, 'WITHSCORES')
  if #old > 0 then
    local add, rem = {}, {}
    for i = 1, #old, 2 do
      add[#add + 1] = old[i + 1]; add[#add + 1] = DL .. old[i]
      rem[#rem + 1] = old[i]
    end
    rcall('ZADD', dk, unpack(add))
    rcall('ZREM', ek, unpack(rem))
  end
  local a = rcall('ZRANGE', dk, 0, 0, 'WITHSCORES')
  if not a[2] then return -1 end
  return math.max(0, tonumber(a[2]) - c.now)
end

-- ---- accept ------------------------------------------------------------------------------------

local A_FIELDS = 16 -- per message: dev, shard, guarantee, command, data, tmpId, producerDeviseId,
                    -- ttl ms, deliver-by, max attempts, not-before, idempotency key, fingerprint, ext,
                    -- API key id, size of the message as the device receives it (bytes)

-- Allocates the next id of shard sh: id = n * S + sh, n = 1..nmax (the largest with id <= idmax),
-- from the shard's counter, which only grows: past nmax it wraps, and an id is then reused only when
-- no record with it exists (its message retired and its retention ended).
local function next_id(c, sh, idmax)
  local sk = key(c, sh, 'seq')
  local nmax = math.floor((idmax - sh) / c.S)
  if nmax < 1 then return nil end
  for _ = 1, 1000 do
    local raw = rcall('INCR', sk)
    local id = ((raw - 1) % nmax + 1) * c.S + sh
    if raw <= nmax then return id end
    local _, bk, f = locate(c, id)
    if rcall('HEXISTS', bk, f) == 0 then return id end
  end
  return nil
end

-- ONLY_LAST supersedes every pending message with the same (device, command), whatever its
-- guarantee, as Duster did; their producers are told CANCELLED. So that this costs the messages it
-- cancels, not the device's queue, a (device, command) that has seen an ONLY_LAST message is indexed:
-- its d: hash field 'o:<command>' says so, and from then on every message accepted for it is a member
-- '<command>\0<id>' of the sorted set {s}oi:<device> (all scores 0, so a range by name finds a
-- command's members) until it retires (R_OI). The first ONLY_LAST message of a (device, command)
-- scans the queue and the not-before schedule once, as every one did before the index; so does the
-- first after the d: hash expired with its field (retention after the device's last activity), which
-- finds everything the index would have. Other commands and guarantees cost nothing.
local function oi_member(cmd, id) return cmd .. '\0' .. s(id) end

local function supersede(c, sh, dev, cmd, indexed)
  local n = 0
  local function cancel(m)
    if m and m.r[R_ST] == 0 and m.r[R_CMD] == cmd then
      transition(c, m, ST.CANCELLED, EV.superseded)
      n = n + 1
      return true
    end
    return false
  end
  if indexed then
    local ok = key(c, sh, 'oi:' .. dev)
    for _, mem in ipairs(rcall('ZRANGEBYLEX', ok, '[' .. cmd .. '\0', '(' .. cmd .. '\0:')) do
      local m = load(c, tonumber(string.sub(mem, #cmd + 2)))
      -- transition retires a cancelled message, which takes it out of the index; a member whose
      -- message is gone, retired, or not of this command (a NUL in a command name) is left over
      if not cancel(m) and (not m or m.r[R_LIVE] ~= 1 or not m.r[R_OI] or m.r[R_CMD] ~= cmd) then
        rcall('ZREM', ok, mem)
      end
    end
    return n
  end
  local q = qkey(c, sh, dev)
  if rcall('EXISTS', q) == 1 then
    for _, e in ipairs(rcall('XRANGE', q, '-', '+')) do
      if e[2][6] == cmd then cancel(load(c, tonumber(e[2][2]))) end
    end
  end
  local dv = rcall('HGET', dkey(c, sh, dev), 'sc')
  if dv and tonumber(dv) > 0 then
    for _, id in ipairs(rcall('ZRANGE', key(c, sh, 'sc:' .. dev), 0, -1)) do
      cancel(load(c, tonumber(id)))
    end
  end
  return n
end

local function accept_one(c, a, i, idmax, out)
  local dev, sh, g, cmd, data = a[i], a[i + 1] + 0, a[i + 2], a[i + 3], a[i + 4]
  local tmp, pd, ttl_ms, dby, mx = a[i + 5], a[i + 6], a[i + 7] + 0, a[i + 8] + 0, a[i + 9] + 0
  local nb, idk, fp, ext, akey = a[i + 10] + 0, a[i + 11], a[i + 12], a[i + 13] + 0, a[i + 14]
  local size = a[i + 15] + 0

  -- Firmware has small input buffers: a command its device cannot take would never be acknowledged
  -- and would block the device's queue, so it is refused here (device override 'maxm', else default).
  -- A device's override and its place in the schedule cannot change within the call, so a batch
  -- with several commands for one device reads the one and sets the other once (c.dev).
  -- The same read takes whether the (device, command) is ONLY_LAST-indexed (see supersede); seen keeps
  -- the answer for the command first seen, which is usually the only one in a batch.
  local seen = c.dev[dev]
  if not seen then
    local dv = rcall('HMGET', dkey(c, sh, dev), 'maxm', 'o:' .. cmd)
    seen = {maxm = tonumber(dv[1]) or false, cmd = cmd, oi = dv[2] ~= false}
    c.dev[dev] = seen
  end
  local indexed
  if seen.cmd == cmd then
    indexed = seen.oi
  else
    indexed = rcall('HEXISTS', dkey(c, sh, dev), 'o:' .. cmd) == 1
  end
  local limit = seen.maxm or c.max_message
  if limit > 0 and size > limit then
    out[#out + 1] = 'TOO_LARGE'; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = limit
    return
  end

  if idk ~= '' then
    local v = rcall('GET', key(c, sh, 'ik:' .. idk))
    if v then
      local sp = string.find(v, ' ', 1, true)
      local oid = tonumber(string.sub(v, sp + 1))
      local om = load(c, oid)
      if om then
        if string.sub(v, 1, sp - 1) ~= fp then
          out[#out + 1] = 'CONFLICT'; out[#out + 1] = s(oid); out[#out + 1] = ''; out[#out + 1] = 0
          return
        end
        notify(c, om, om.r[R_ST], om.r[R_ST]) -- repeat the receipt, with the original id
        save(om) -- the record names the repeat as its last change (the next change waits for it)
        out[#out + 1] = 'DUP'; out[#out + 1] = s(oid); out[#out + 1] = STN[om.r[R_ST]]; out[#out + 1] = 0
        return
      end
    end
  end

  local id = next_id(c, sh, idmax)
  if not id then
    out[#out + 1] = 'FULL'; out[#out + 1] = ''; out[#out + 1] = ''; out[#out + 1] = 0
    return
  end
  local st = (g == 'NO') and ST.UNKNOWN or ST.NOT_DELIVERED
  local cancelled = 0
  if g == 'ONLY_LAST' then
    cancelled = supersede(c, sh, dev, cmd, indexed)
    if not indexed then
      local dk = dkey(c, sh, dev)
      local dv = rcall('HMGET', dk, 'cfg', 'x')
      dev_write(c, dk, dv[1], dv[2], {'o:' .. cmd, '1'})
      indexed = true
      if seen.cmd == cmd then seen.oi = true end
    end
  end

  local deadline = 0
  if ttl_ms > 0 then deadline = c.now + ttl_ms end
  if dby > 0 and (deadline == 0 or dby < deadline) then deadline = dby end
  -- Nothing blocks a queue forever unless asked for: without a deadline of its own a message gets
  -- the default one (0: none).
  if deadline == 0 and c.default_ttl > 0 then deadline = math.max(c.now, nb) + c.default_ttl end
  local _, bk, f = locate(c, id)
  -- R_FMT true: the history's first entry, {accepted, st, 0, 0}, is implicit (see unpack_record)
  local m = {id = id, sh = sh, bk = bk, f = f, r = {
    dev, GC[g], cmd, data, st, c.now, c.now, 0, tonumber(tmp) or 0, pd, deadline, mx, nb, ext, idk, akey,
    '', 0, 0, 0, {}, 1, pd ~= '' and 1 or 0, '', true}}
  if indexed then
    rcall('ZADD', key(c, sh, 'oi:' .. dev), '0', oi_member(cmd, id))
    m.r[R_OI] = 1
  end
  local live = rcall('HINCRBY', bk, '#', 1)
  if lcount(live) == 1 then rcall('PERSIST', bk) end
  if deadline > 0 then
    -- The bucket's deadline member covers this deadline unless it has none, comes later, or is due
    -- already (then the pass may have taken it away): see DL.
    local e = lentry(live)
    if e == 0 or deadline < e or e <= c.now then
      rcall('ZADD', key(c, sh, 'due'), 'LT', s(deadline), dl_member(c, id))
      live = live + (deadline - e) * LIVE_DIV
      m.count = c.live -- written by the save below
    end
  end
  c.live[bk] = live

  local new_dev
  if nb > c.now then
    local dk = dkey(c, sh, dev)
    rcall('ZADD', key(c, sh, 'sc:' .. dev), s(nb), s(id))
    rcall('HINCRBY', dk, 'sc', '1')
    local dv = rcall('HMGET', dk, 'cfg', 'x')
    if dev_refresh(c, dv[1], dv[2]) then dev_write(c, dk, dv[1], dv[2], {}) end
    new_dev = wake(c, sh, dev, nb)
  else
    m.r[R_NB] = 0
    enqueue(c, m)
    if not seen.due_now then new_dev = wake(c, sh, dev, c.now) end
    seen.due_now = true -- due now: later commands of the call need not wake it again
  end
  if new_dev then index_dev(c, sh, dev) end
  notify(c, m, st, nil)
  save(m)
  local dm = key(c, sh, 'dm:' .. dev)
  local sid = s(id)
  rcall('ZADD', dm, sid, sid)
  if ((id - sh) / c.S) % 32 == 0 then
    -- now and then: bound the per-device listing to the newest 10,000 and let it expire when idle
    rcall('ZREMRANGEBYRANK', dm, '0', '-10001')
    rcall('EXPIRE', dm, c.rets)
  end
  if ((id - sh) / c.S) % 64 == 1 then
    -- fleet search index (con_search): time -> position of every 64th message, kept for the retention
    local ix = key(c, sh, 'ix')
    rcall('ZADD', ix, s(c.now), sid)
    rcall('ZREMRANGEBYSCORE', ix, '-inf', s(c.now - c.ret * 1000))
  end
  if idk ~= '' then rcall('SET', key(c, sh, 'ik:' .. idk), fp .. ' ' .. sid) end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 'OK', sid, STN[st], cancelled
end

-- accept_batch: stores producer messages atomically, in order.
-- KEYS: <prefix>{<shard>} of every shard in the batch (the first also holds the batch token).
-- ARGV[5..]: largest id, batch token ('' = none), token ttl (s), default deliver-by (ms after
-- acceptance or not-before; 0 = none), default largest device message (bytes; 0 = no limit), count,
-- then count x A_FIELDS.
-- The token makes the caller's own retries safe: a call whose reply was lost may have run, and its
-- retry must get the same answer, not store the batch again.
-- Returns {results, notes}: results = 4 per message {code, id, status, cancelled}, code OK | DUP |
-- CONFLICT | FULL | TOO_LARGE (then the 4th value is the device's limit); notes as claim().
local function accept_batch(keys, args)
  local c = ctx(args)
  local idmax, token, tttl = tonumber(args[5]), args[6], tonumber(args[7])
  c.default_ttl, c.max_message = tonumber(args[8]), tonumber(args[9])
  c.dev = {} -- per device of the batch (accept_one)
  local n = tonumber(args[10])
  local tk = nil
  if token ~= '' then
    tk = keys[1] .. 'rq:' .. token
    local prev = rcall('GET', tk)
    if prev then
      -- The first call ran and its reply was lost: the same answer, and the notifications it claimed
      -- (still ours, never published) so they go out now rather than after a reclaim.
      -- Only those still ours: another node may have taken one over (see notify) and published it.
      -- Claiming again resets their idle time, so nobody takes them over while we publish them.
      local v = cmsgpack.unpack(prev)
      local notes = {}
      for i = 1, #v[2], 2 do
        local lk, id = key(c, v[2][i], 'log'), v[2][i + 1]
        local p = rcall('XPENDING', lk, PUB, id, id, 1)
        if p[1] and p[1][2] == c.node then
          local e = rcall('XCLAIM', lk, PUB, c.node, 0, id)[1]
          if e then add_note(notes, v[2][i], e) end
        end
      end
      return {v[1], notes}
    end
  end
  local out = {}
  for k = 0, n - 1 do accept_one(c, args, 11 + k * A_FIELDS, idmax, out) end
  local notes = claim(c, {})
  if tk then
    local ids = {}
    for i = 1, #notes, 9 do ids[#ids + 1] = tonumber(notes[i]); ids[#ids + 1] = notes[i + 1] end
    rcall('SET', tk, cmsgpack.pack({out, ids}), 'EX', args[7])
  end
  return {out, notes}
end

-- ---- acks --------------------------------------------------------------------------------------

local function ack_one(c, dev, id, new, out)
  local m = load(c, id)
  if not m then out[#out + 1] = 'UNKNOWN_ID'; out[#out + 1] = ''; out[#out + 1] = ''; return end
  local r = m.r
  if r[R_DEV] ~= dev then out[#out + 1] = 'WRONG_DEVICE'; out[#out + 1] = ''; out[#out + 1] = ''; return end
  local st = ST[new]
  if not st or FINAL[r[R_ST]] or RANK[st] <= RANK[r[R_ST]] or (r[R_ATT] == 0 and r[R_SHOWN] == 0) then
    -- a message never sent (nor shown by a REST poll) cannot be acknowledged: no device saw its id
    out[#out + 1] = 'IGNORED'; out[#out + 1] = STN[r[R_ST]]; out[#out + 1] = ''
    return
  end
  local first = RANK[r[R_ST]] == 0 -- the first ack that confirms delivery
  local more, nxt = r[R_MORE] == 1, r[R_NXT]
  transition(c, m, st, EV.ack)
  local dk = dkey(c, m.sh, dev)
  if more and nxt then
    -- The send saw more queued and knew when the device may be sent to next: no read of the d:
    -- hash. The send refreshed its expiry; a hash that was gone since (HSET adds 'a' to nothing, or
    -- the device's first ack) gets the expiry any write gives.
    if rcall('HSET', dk, 'a', s(c.now)) == 1 then
      local dv = rcall('HMGET', dk, 'cfg', 'x')
      if dev_refresh(c, dv[1], dv[2]) then dev_write(c, dk, dv[1], dv[2], {}) end
    end
    wake(c, m.sh, dev, math.max(c.now, nxt))
    local n = #out
    out[n + 1], out[n + 2], out[n + 3] = 'OK', new, first and s(c.now - r[R_TS]) or ''
    return
  end
  local dv = rcall('HMGET', dk, 'n', 'sc', 'cfg', 'x')
  dev_write(c, dk, dv[3], dv[4], {'a', s(c.now)})
  -- The freed window slot lets the next message go as soon as pacing allows, not at the next scan;
  -- a device with nothing left leaves the schedule now rather than at its last re-send time. When the
  -- send saw more queued (R_MORE), the queue is not read: were it empty by now (the rest cancelled
  -- or expired), the pass that comes finds so and lets the device leave the schedule.
  if more or (tonumber(dv[2]) or 0) > 0 or rcall('XLEN', qkey(c, m.sh, dev)) > 0 then
    wake(c, m.sh, dev, math.max(c.now, tonumber(dv[1]) or 0))
  else
    idle(c, m.sh, dev)
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = 'OK', new, first and s(c.now - r[R_TS]) or ''
end

-- ack_batch: applies device acks in order. KEYS: <prefix>{<shard>} per shard involved.
-- ARGV[5..]: count, then count x (device, message id, status).
-- Returns {results, notes}: results = 3 per ack {code, status, age}, code OK | IGNORED | WRONG_DEVICE |
-- UNKNOWN_ID (status: the new one, or the current one when ignored; age: ms since the message was
-- accepted, for the first ack that confirms delivery only, else '').
local function ack_batch(keys, args)
  local c = ctx(args)
  local n = tonumber(args[5])
  local out = {}
  for k = 0, n - 1 do
    local i = 6 + k * 3
    ack_one(c, args[i], tonumber(args[i + 1]), args[i + 2], out)
  end
  return {out, claim(c, {})}
end

-- ---- dispatch ----------------------------------------------------------------------------------

-- What a shard's lease key holds while the calling node holds it with epoch.
local function lease_value(c, epoch) return c.node .. ' ' .. epoch end

local function fenced(c, sh, epoch)
  return rcall('GET', key(c, sh, 'lease')) ~= lease_value(c, epoch)
end

-- The deadline member mem of bucket bn of shard sh is due (the caller removed it): expires the
-- bucket's live messages whose deadline has passed, wakes their devices, and puts the member back at
-- the next deadline of the bucket's live messages, if any (see DL). A bucket whose messages have all
-- retired costs one read.
local function expire_bucket(c, sh, bn, mem, stats)
  local bk = key(c, sh, 'm:' .. s(bn))
  local v = tonumber(rcall('HGET', bk, '#'))
  if not v then return end -- expired with its messages
  c.live[bk] = v
  local nxt = nil
  if lcount(v) > 0 then
    local all = rcall('HGETALL', bk)
    for i = 1, #all, 2 do
      local f = all[i]
      if f ~= '#' then
        local r = unpack_record(all[i + 1])
        if pending(r) and r[R_TTL] > 0 then
          if r[R_TTL] <= c.now then
            local m = {id = (bn * BUCKET + tonumber(f)) * c.S + sh, sh = sh, bk = bk, f = f, r = r}
            transition(c, m, ST.EXPIRED, EV.deadline)
            stats.expired = stats.expired + 1
            wake(c, sh, r[R_DEV], c.now)
          elseif not nxt or r[R_TTL] < nxt then
            nxt = r[R_TTL]
          end
        end
      end
    end
  end
  local live = lcount(c.live[bk]) + (nxt or 0) * LIVE_DIV
  c.live[bk] = live
  rcall('HSET', bk, '#', s(live))
  if nxt then
    rcall('ZADD', key(c, sh, 'due'), s(nxt), mem)
    local h = c.due_min[sh]
    if not h or nxt < h then c.due_min[sh] = nxt end
  end
end

-- One pass over shard sh (the caller checked the lease): expires overdue messages, then, for each due
-- device, decides what may be sent now and records the send before it happens, so a crash after
-- the call means a re-send with the same id, never a loss. Appends the sends to out (with the shard
-- in front when tagged). Returns expired, failed, more (1: stopped at the batch size), the ms until
-- the shard needs the next pass (-1: nothing scheduled), and the number of devices visited.
local function pass_one(c, sh, batch, pol, out, tagged)
  local stats = {expired = 0, failed = 0}

  -- One read of the schedule, one entry more than the batch: the first entry not taken is the shard's
  -- next time (every due time the pass sets is noted in c.due_min), so no further read is needed for
  -- the reply. Deadlines go first, so an expired message is never sent (a pass also expires what it
  -- meets past its deadline: send_step); the devices they wake are due at once, for the next pass.
  local dk = key(c, sh, 'due')
  local nexp, head = 0, nil
  local devs = {}
  local due = rcall('ZRANGE', dk, '0', s(batch), 'WITHSCORES')
  for i = 1, #due, 2 do
    local t = due[i + 1] + 0
    if t > c.now or nexp + #devs >= batch then head = t; break end
    local mem = due[i]
    if string.byte(mem, 1) == 35 and string.byte(mem, 2) == 109 then -- '#m': a bucket's deadlines
      nexp = nexp + 1
      rcall('ZREM', dk, mem)
      expire_bucket(c, sh, tonumber(string.sub(mem, 3)), mem, stats)
    elseif string.byte(mem, 1) == 35 then -- '#<id>': one message's deadline (an older library's)
      nexp = nexp + 1
      rcall('ZREM', dk, mem)
      local m = load(c, tonumber(string.sub(mem, 2)))
      if m and pending(m.r) then
        transition(c, m, ST.EXPIRED, EV.deadline)
        stats.expired = stats.expired + 1
        wake(c, sh, m.r[R_DEV], c.now)
      end
    else
      devs[#devs + 1] = mem
    end
  end
  for i = 1, #devs do
    local m = send_step(c, sh, devs[i], 'mqtt', pol, stats)
    if m then
      if tagged then out[#out + 1] = s(sh) end
      send_out(c, m, out)
    end
  end
  local more = 0
  if #devs + nexp >= batch then more = 1 end
  local set = c.due_min[sh]
  if set and (not head or set < head) then head = set end
  local wait = -1
  if head then wait = math.max(0, head - c.now) end
  return stats.expired, stats.failed, more, wait, #devs + nexp
end

-- dispatch: one pass over a shard the caller owns (see pass_one).
-- KEYS: <prefix>{<shard>}. ARGV[5..]: shard, epoch, batch, then the send policy (window, interval,
-- ack timeout, longest retry wait, back-off, jitter %, seed).
-- Returns {'FENCED'} or {'OK', expired, failed, more, next pass in ms (-1: none), sends, notes}; sends are
-- 9 per message {id, device, guarantee, command, data, attempt, send time, accept time, MQTT 5
-- expiry in s (0: none; see send_expiry)}.
local function dispatch(keys, args)
  local c = ctx(args)
  local sh, epoch, batch = tonumber(args[5]), args[6], tonumber(args[7])
  if fenced(c, sh, epoch) then return {'FENCED'} end
  local pol = policy(args, 8)
  local out = {}
  local expired, failed, more, wait = pass_one(c, sh, batch, pol, out, false)
  return {'OK', expired, failed, more, wait, out, claim(c, {})}
end

-- dispatch_many: passes over several shards the caller owns, in one call (one clock read, one
-- reply), each fenced on its own. The call stops taking shards once it has visited batch devices and
-- deadlines in all, so it blocks Redis no longer than one full pass; the shards it did not take are
-- answered 'LATER' (the caller runs them next).
-- KEYS: <prefix>{<shard>} per shard. ARGV[5..]: batch, the send policy (7 values as for dispatch),
-- count, then count x (shard, epoch).
-- Returns {results, sends, notes}: results = 6 per shard in the order given {shard, code (OK | FENCED
-- | LATER), expired, failed, more, next pass in ms (-1: none)}; sends = 10 per message, the shard and
-- then the 9 values of dispatch's sends; notes as claim().
local function dispatch_many(keys, args)
  local c = ctx(args)
  local batch = tonumber(args[5])
  local pol = policy(args, 6)
  local n = tonumber(args[13])
  local res, out = {}, {}
  local visited = 0
  -- every shard's lease in one read (a pass writes no lease, so they hold for the whole call)
  local held = {}
  for from = 0, n - 1, 500 do
    local lk = {}
    for k = from, math.min(n, from + 500) - 1 do lk[#lk + 1] = key(c, tonumber(args[14 + 2 * k]), 'lease') end
    for i, v in ipairs(rcall('MGET', unpack(lk))) do held[from + i] = v end
  end
  for k = 0, n - 1 do
    local sh, epoch = tonumber(args[14 + 2 * k]), args[15 + 2 * k]
    res[#res + 1] = s(sh)
    if visited >= batch then
      res[#res + 1] = 'LATER'; res[#res + 1] = 0; res[#res + 1] = 0; res[#res + 1] = 0; res[#res + 1] = 0
    elseif held[k + 1] ~= lease_value(c, epoch) then
      res[#res + 1] = 'FENCED'; res[#res + 1] = 0; res[#res + 1] = 0; res[#res + 1] = 0; res[#res + 1] = -1
    else
      local expired, failed, more, wait, v = pass_one(c, sh, batch, pol, out, true)
      visited = visited + v
      res[#res + 1] = 'OK'; res[#res + 1] = expired; res[#res + 1] = failed; res[#res + 1] = more
      res[#res + 1] = wait
    end
  end
  return {res, out, claim(c, {})}
end

-- unsend: a send the dispatcher recorded but could not publish does not count as an attempt: the
-- attempt is taken back and the message is due again at once (pacing still applies).
-- KEYS: <prefix>{<shard>}. ARGV[5..]: shard, epoch, message id, attempt recorded.
-- Returns 1 when undone, 0 when the message moved on (acknowledged, finished, sent again), or
-- {'FENCED'}.
local function unsend(keys, args)
  local c = ctx(args)
  local sh, epoch, id, att = tonumber(args[5]), args[6], tonumber(args[7]), tonumber(args[8])
  if fenced(c, sh, epoch) then return {'FENCED'} end
  local m = load(c, id)
  if not m or m.r[R_ATT] ~= att or not pending(m.r) or m.r[R_G] == 'N' then return 0 end
  m.r[R_ATT] = att - 1
  m.r[R_DUE] = c.now
  hist(c, m, EV.unsent)
  save(m)
  wake(c, sh, m.r[R_DEV], c.now)
  return 1
end

-- heads: ms until each shard needs a pass (-1: nothing scheduled). KEYS: <prefix>{<shard>} per shard.
-- ARGV[5..]: shards.
local function heads(keys, args)
  local c = ctx(args)
  local out = {}
  for i = 5, #args do out[#out + 1] = shard_head(c, tonumber(args[i])) end
  return out
end

-- reclaim: notifications another node claimed and never acknowledged (it died, or its publish
-- failed) for longer than min idle ms move to the caller. KEYS: <prefix>{<shard>}.
-- ARGV[5..]: shard, min idle (ms), count. Returns notes as claim(), plus the number of entries that
-- were trimmed from the log before anybody published them (lost notifications, counted). Entries of
-- a message that has logged a later change are confirmed instead (see below).
local function reclaim(keys, args)
  local c = ctx(args)
  local sh, idle, count = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  local lk = key(c, sh, 'log')
  local r = rpcall('XAUTOCLAIM', lk, PUB, c.node, idle, '0-0', 'COUNT', count)
  if failed(r) then return {{}, 0} end -- no log (or no group) yet
  -- An entry whose message has logged a later change since is confirmed and left out: published now,
  -- it could reach the producer after that later change (its node published it and lost the
  -- confirmation, or its publish failed or timed out while the later change went out). A producer
  -- may miss such a change; it never sees a message's status go backwards.
  local out, superseded = {}, {}
  for _, e in ipairs(r[2]) do
    local v = note_fields(e[2]) or {'', ''}
    local m = load(c, tonumber(v[NOTE_ID]))
    local last = m and note_of(m.r) or ''
    -- the same message (not a later one that reused its id after a wrap): same device, logged since
    -- its acceptance
    if last ~= '' and last ~= e[1] and id_le(e[1], last) and m.r[R_DEV] == v[NOTE_DEV] and
       tonumber(string.match(e[1], '^(%d+)')) >= m.r[R_TS] then
      superseded[#superseded + 1] = e[1]
    elseif not add_note(out, sh, e) then
      superseded[#superseded + 1] = e[1] -- holds no note: nothing to publish
    end
  end
  if #superseded > 0 then rcall('XACK', lk, PUB, unpack(superseded)) end
  local lost = r[3] and #r[3] or 0
  return {out, lost}
end

-- note_wait: the state of a log entry a note waits for (see notify): 1 when it is confirmed, 0 while
-- its node may still be publishing it, or, once it has been unconfirmed for stale ms, the entry
-- itself, taken over by the caller (a note, as claim() returns them), to publish first.
-- A node also calls it on its own unsettled entries, with a stale time that never passes, to reset
-- their idle time (reclaim and FRESH_MS then leave them alone; common/src/notes.c).
-- KEYS: <prefix>{<shard>}. ARGV[5..]: shard, entry id, stale ms.
local function note_wait(keys, args)
  local c = ctx(args)
  local sh, id, stale = tonumber(args[5]), args[6], tonumber(args[7])
  local lk = key(c, sh, 'log')
  local p = rpcall('XPENDING', lk, PUB, id, id, 1)
  if failed(p) or not p[1] then return 1 end
  if p[1][2] ~= c.node and p[1][3] < stale then return 0 end
  local e = rcall('XCLAIM', lk, PUB, c.node, 0, id)[1]
  if not e then return 1 end
  local out = {}
  if not add_note(out, sh, e) then
    rcall('XACK', lk, PUB, id) -- holds no note: nothing to publish
    return 1
  end
  return out
end

-- trim_log: keeps the status log to what SSE clients may still resume from (keep ms), but never drops
-- an entry that is claimed and not yet published. KEYS: <prefix>{<shard>}. ARGV[5..]: shard, keep ms.
local function trim_log(keys, args)
  local c = ctx(args)
  local sh, keep = tonumber(args[5]), tonumber(args[6])
  local lk = key(c, sh, 'log')
  local minid = s(math.max(0, c.now - keep)) .. '-0'
  local p = rpcall('XPENDING', lk, PUB)
  if failed(p) then return 0 end -- no log (or no group) yet
  if p[1] > 0 then
    local oldest = p[2]
    local ms = tonumber(string.match(oldest, '^(%d+)-'))
    if ms * 1 < c.now - keep then minid = oldest end
  end
  return rcall('XTRIM', lk, 'MINID', '~', minid)
end

-- ---- leases ------------------------------------------------------------------------------------

-- lease: membership heartbeat and shard leases for one dispatcher. KEYS: none (it reads every
-- shard's lease and the global <prefix>nodes; on Redis Cluster membership and leases would be split,
-- and the leases stay in their shards' slots so that every pass checks its lease atomically:
-- docs/architecture.md §3, "Redis Cluster").
-- ARGV[5..]: lease ttl (ms), release ('1' = give everything back and leave).
-- Each node aims at ceil(shards / live nodes) shards: it renews what it holds, hands surplus shards
-- back so newcomers can take them, and takes free shards (a dead node's leases simply expire).
-- Taking a shard increments its epoch; the epoch fences every write of the previous holder.
-- Returns {shard, epoch, ...} of the shards now held.
local function lease(keys, args)
  local c = ctx(args)
  local ttl, release = tonumber(args[5]), args[6] == '1'
  local nodes = c.P .. 'nodes'
  local tag = c.node .. ' '
  local mine, free = {}, {}
  for sh = 0, c.S - 1 do
    local v = rcall('GET', key(c, sh, 'lease'))
    if not v then
      free[#free + 1] = sh
    elseif string.sub(v, 1, #tag) == tag then
      mine[#mine + 1] = {sh, string.sub(v, #tag + 1)}
    end
  end
  if release then
    rcall('ZREM', nodes, c.node)
    for _, e in ipairs(mine) do rcall('DEL', key(c, e[1], 'lease')) end
    return {}
  end
  rcall('ZADD', nodes, c.now + ttl, c.node)
  rcall('ZREMRANGEBYSCORE', nodes, '-inf', c.now)
  local target = math.ceil(c.S / rcall('ZCARD', nodes))
  while #mine > target do
    local e = table.remove(mine)
    rcall('DEL', key(c, e[1], 'lease'))
  end
  for _, e in ipairs(mine) do rcall('PEXPIRE', key(c, e[1], 'lease'), ttl) end
  for _, sh in ipairs(free) do
    if #mine >= target then break end
    local ep = rcall('INCR', key(c, sh, 'epoch'))
    rcall('SET', key(c, sh, 'lease'), tag .. s(ep), 'PX', ttl)
    mine[#mine + 1] = {sh, s(ep)}
  end
  local out = {}
  for _, e in ipairs(mine) do
    out[#out + 1] = s(e[1])
    out[#out + 1] = e[2]
  end
  return out
end

-- ---- REST and operator calls -------------------------------------------------------------------

-- cancel: a producer or operator withdraws a message that was not delivered yet; the dispatcher
-- also uses it to fail a message no broker would accept (its device id is not a valid topic level).
-- KEYS: <prefix>{<shard of id>}. ARGV[5..]: message id, caller's API key id ('' for an operator: any
-- message), and optionally the outcome 'FAILED' with its history event (default CANCELLED).
-- Returns {{'OK', shard, device} | {'CONFLICT', status} | {'NOT_FOUND'}, notes}.
local function cancel(keys, args)
  local c = ctx(args)
  local m = load(c, tonumber(args[5]))
  local caller = args[6] or ''
  local st, ev = ST.CANCELLED, EV.cancelled
  if args[7] == 'FAILED' then st, ev = ST.FAILED, EV[args[8]] or EV.refused end
  -- A producer may cancel what it submitted; an operator (caller '') anything.
  if not m or (caller ~= '' and m.r[R_KEY] ~= caller) then return {{'NOT_FOUND'}, {}} end
  if pending(m.r) then
    transition(c, m, st, ev)
    wake(c, m.sh, m.r[R_DEV], c.now) -- its window slot may be free now
    return {{'OK', s(m.sh), m.r[R_DEV]}, claim(c, {})}
  end
  return {{'CONFLICT', STN[m.r[R_ST]]}, {}}
end

-- purge: every pending message of a device becomes PURGED (shown as CANCELLED to producers that
-- did not use Drover-only fields), in bounded steps; the caller repeats with the returned cursor
-- while more is returned. Each step scans up to step queue entries, whoever submitted them, so a
-- scoped purge reaches its own messages behind any number of others.
-- KEYS: <prefix>{<shard>}. ARGV[5..]: device, shard, step, caller's API key id ('' = operator: all
-- messages; otherwise only the caller's own), cursor ('' to start: also the not-before schedule).
-- Returns {{'OK', purged, more, cursor}, notes}.
local function purge(keys, args)
  local c = ctx(args)
  local dev, sh, step, caller, cursor = args[5], tonumber(args[6]), tonumber(args[7]), args[8] or '', args[9] or ''
  local n = 0
  local function one(m)
    if caller ~= '' and m.r[R_KEY] ~= caller then return end
    transition(c, m, ST.PURGED, EV.purged)
    n = n + 1
  end
  if cursor == '' then
    for _, id in ipairs(rcall('ZRANGE', key(c, sh, 'sc:' .. dev), 0, -1)) do
      local m = load(c, tonumber(id))
      if m and pending(m.r) then one(m) end
    end
  end
  local q = qkey(c, sh, dev)
  local more = 0
  if rcall('EXISTS', q) == 1 then
    local from = cursor == '' and '-' or '(' .. cursor
    local entries = rcall('XRANGE', q, from, '+', 'COUNT', step)
    for _, e in ipairs(entries) do
      local m = load(c, tonumber(e[2][2]))
      if not m or not pending(m.r) then
        drop_entry(c, q, e[1]) -- an entry whose message already finished goes too
      else
        one(m)
      end
      cursor = e[1]
    end
    if #entries >= step then more = 1 end
  end
  wake(c, sh, dev, c.now)
  return {{'OK', n, more, cursor}, claim(c, {})}
end

-- pull: a device asks for its next message over REST. The same decision as an MQTT send (order,
-- window, pacing, re-sends with the same id), so a device may mix both ways.
-- KEYS: <prefix>{<shard>}. ARGV[5..]: device, shard, then the send policy (as dispatch).
-- Returns {{'MSG', id, guarantee, command, data, attempt, send time} | {'NONE', ms until it is due or ''},
-- notes}.
local function pull(keys, args)
  local c = ctx(args)
  local dev, sh = args[5], tonumber(args[6])
  local pol = policy(args, 7)
  local m = send_step(c, sh, dev, true, pol, {expired = 0, failed = 0})
  local notes = claim(c, {})
  if m then
    local o = send_out(c, m, {})
    return {{'MSG', o[1], o[3], o[4], o[5], o[6], o[7]}, notes}
  end
  local due = rcall('ZSCORE', key(c, sh, 'due'), dev)
  if due then due = s(math.max(0, tonumber(due) - c.now)) end
  return {{'NONE', due or ''}, notes}
end

-- peek: Duster's GET /consumer/getLastMessage: the oldest NOT_DELIVERED message of a device,
-- without touching pacing or attempts (as Duster did). It is marked as shown so the device may
-- acknowledge it. KEYS: <prefix>{<shard>}. ARGV[5..]: device, shard.
-- Returns {} or {id, guarantee, command, data, Redis time (its currentTimestamp)}.
local function peek(keys, args)
  local c = ctx(args)
  local dev, sh = args[5], tonumber(args[6])
  local q = qkey(c, sh, dev)
  if rcall('EXISTS', q) == 0 then return {} end
  for _, e in ipairs(rcall('XRANGE', q, '-', '+', 'COUNT', 100)) do
    local m = load(c, tonumber(e[2][2]))
    if m and m.r[R_ST] == 0 then
      if m.r[R_SHOWN] == 0 then
        m.r[R_SHOWN] = 1
        save(m)
      end
      return {s(m.id), GN[m.r[R_G]], m.r[R_CMD], m.r[R_DATA], s(c.now)}
    end
  end
  return {}
end

-- devinfo: a device's queue and pacing. KEYS: <prefix>{<shard>}. ARGV[5..]: device, shard.
-- Returns {queued, in flight, scheduled, next, last send, last ack, interval, window, mode, max
-- message} with '' for values never set.
local function devinfo(keys, args)
  local c = ctx(args)
  local dev, sh = args[5], tonumber(args[6])
  local q = qkey(c, sh, dev)
  local len, pel = 0, 0
  if rcall('EXISTS', q) == 1 then
    len = rcall('XLEN', q)
    local p = rpcall('XPENDING', q, GROUP)
    if not failed(p) then pel = p[1] end
  end
  local d = rcall('HMGET', dkey(c, sh, dev), 'n', 'l', 'a', 'iv', 'win', 'mode', 'maxm')
  return {len - pel, pel, rcall('ZCARD', key(c, sh, 'sc:' .. dev)), d[1] or '', d[2] or '', d[3] or '',
          d[4] or '', d[5] or '', d[6] or '', d[7] or ''}
end

-- devset: operator overrides of one device (interval ms, window, mode, largest message in bytes; ''
-- leaves a value, '-' removes it). A device with overrides keeps its hash; one without expires with
-- its state. KEYS: <prefix>{<shard>}. ARGV[5..]: device, shard, interval, window, mode, max message.
-- Returns 1.
local function devset(keys, args)
  local c = ctx(args)
  local dev, sh = args[5], tonumber(args[6])
  local dk = dkey(c, sh, dev)
  local names = {'iv', 'win', 'mode', 'maxm'}
  for i, f in ipairs(names) do
    local v = args[6 + i]
    if v == '-' then rcall('HDEL', dk, f) elseif v and v ~= '' then rcall('HSET', dk, f, v) end
  end
  local left = rcall('HMGET', dk, 'iv', 'win', 'mode', 'maxm')
  if left[1] or left[2] or left[3] or left[4] then
    rcall('HSET', dk, 'cfg', '1')
    rcall('PERSIST', dk)
  else
    rcall('HDEL', dk, 'cfg', 'x') -- the next write refreshes the expiry (dev_refresh)
    if rcall('EXISTS', dk) == 1 then rcall('EXPIRE', dk, c.ret) end
  end
  index_dev(c, sh, dev)
  wake(c, sh, dev, c.now) -- a new interval or window may let something go now
  return 1
end

-- get: messages by id, each as {id, device, guarantee, command, data, status, accepted ms, last
-- change ms, attempts, tmpId or '', producerDeviseId, deliver-by, max attempts, not-before, ext,
-- idempotency key, API key id, last send ms, next re-send ms, history}, or {} for an unknown id;
-- history is flat {event, status, ms, attempt, ...}. KEYS: <prefix>{<shard>} per shard involved.
-- ARGV[5..]: ids.
local function get(keys, args)
  local c = ctx(args)
  local out = {}
  for i = 5, #args do
    local m = load(c, tonumber(args[i]))
    if not m then
      out[#out + 1] = {}
    else
      local r = m.r
      local h, rh = {}, history_of(r)
      for j = 1, #rh, 4 do
        h[#h + 1] = EVN[rh[j]] or '?'
        h[#h + 1] = STN[rh[j + 1]]
        h[#h + 1] = s(r[R_TS] + rh[j + 2])
        h[#h + 1] = s(rh[j + 3])
      end
      out[#out + 1] = {s(m.id), r[R_DEV], GN[r[R_G]], r[R_CMD], r[R_DATA], STN[r[R_ST]], s(r[R_TS]), s(r[R_CHG]),
                       s(r[R_ATT]), r[R_HASPD] == 1 and s(r[R_TMP]) or '', r[R_PD], s(r[R_TTL]), s(r[R_MAX]),
                       s(r[R_NB]), s(r[R_EXT]), r[R_IDK], r[R_KEY], s(r[R_SENT]), s(r[R_DUE]), h}
    end
  end
  return out
end

-- list: ids of a device's messages, newest first, below a cursor (0 = from the newest), at most
-- limit; ids whose record is gone are dropped from the listing. KEYS: <prefix>{<shard>}.
-- ARGV[5..]: device, shard, cursor, limit. Returns {id, ...}.
local function list(keys, args)
  local c = ctx(args)
  local dev, sh, cursor, limit = args[5], tonumber(args[6]), tonumber(args[7]), tonumber(args[8])
  local dm = key(c, sh, 'dm:' .. dev)
  local out = {}
  local hi = '+inf'
  if cursor > 0 then hi = '(' .. s(cursor) end
  for _ = 1, 10 do
    local ids = rcall('ZRANGE', dm, hi, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit - #out)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local _, bk, f = locate(c, tonumber(id))
      if rcall('HEXISTS', bk, f) == 1 then out[#out + 1] = id else rcall('ZREM', dm, id) end
      hi = '(' .. id
    end
    if #out >= limit then break end
  end
  return out
end

-- layout: the data layout and shard count this Redis holds, recorded by the first node that runs;
-- every node and tool checks that they are its own before touching anything, because a different
-- shard count would put a device's keys in another shard. KEYS: <prefix>layout.
-- ARGV[5..]: layout version. Returns 'OK' or an error naming what is stored.
local function layout(keys, args)
  local c = ctx(args)
  local want = args[5] .. ' ' .. s(c.S)
  local k = keys[1] or c.P .. 'layout' -- a node of an older release declares no key
  local have = rcall('GET', k)
  if not have then
    rcall('SET', k, want)
    return 'OK'
  end
  if have == want then return 'OK' end
  return redis.error_reply('LAYOUT this Redis holds data layout and shard count "' .. have ..
                           '", this node uses "' .. want .. '"')
end

-- ids_advance: moves shard ARGV[5]'s id counter forward by ARGV[7] ids (0: half of the shard's id
-- space, ids.max = ARGV[6]). Run after Redis was restored from an older backup, or failed over to a
-- replica that missed writes: the counter then stands where the backup left it, and the ids handed
-- out after that moment (which devices may remember) would be handed out again. Ids skipped this way
-- come back only after a full lap, like any wrapped id. KEYS[1] = <prefix>{<shard>}. Returns the
-- shard's next id.
local function ids_advance(keys, args)
  local c = ctx(args)
  local sh, idmax, by = tonumber(args[5]), tonumber(args[6]), tonumber(args[7])
  local nmax = math.floor((idmax - sh) / c.S)
  if nmax < 1 then return 0 end
  if by <= 0 then by = math.ceil(nmax / 2) end
  local raw = rcall('INCRBY', key(c, sh, 'seq'), by)
  return (raw % nmax + 1) * c.S + sh
end

-- subs: the MQTT filters the calling node's persistent broker session holds, <prefix>subs:<node>.
-- MQTT 3.1.1 cannot list a session's subscriptions, so a node records what it subscribes and, at its
-- next start, unsubscribes what it recorded but no longer wants (a changed mqtt.share_group, say).
-- KEYS: <prefix>subs:<node>. ARGV[5]: 'add' (record ARGV[6..] beside what is there: before the stale
-- ones are confirmed gone) or 'set' (record exactly ARGV[6..]: after). Returns the filters recorded
-- before the call.
local function subs(keys, args)
  local c = ctx(args)
  local k = keys[1] or c.P .. 'subs:' .. c.node -- a node of an older release declares no key
  local before = rcall('SMEMBERS', k)
  if args[5] == 'set' then rcall('DEL', k) end
  for i = 6, #args do rcall('SADD', k, args[i]) end
  return before
end

redis.register_function{function_name = 'generation', callback = function() return GENERATION end,
                        flags = {'no-writes'}}
redis.register_function('layout', api(layout))
redis.register_function('subs', api(subs))
redis.register_function('ids_advance', api(ids_advance))
redis.register_function('accept_batch', api(accept_batch))
redis.register_function('ack_batch', api(ack_batch))
redis.register_function('dispatch', api(dispatch))
redis.register_function('dispatch_many', api(dispatch_many))
redis.register_function('unsend', api(unsend))
redis.register_function('heads', api(heads))
redis.register_function('reclaim', api(reclaim))
redis.register_function('trim_log', api(trim_log))
redis.register_function('note_wait', api(note_wait))
redis.register_function('lease', api(lease))
redis.register_function('cancel', api(cancel))
redis.register_function('purge', api(purge))
redis.register_function('pull', api(pull))
redis.register_function{function_name = 'peek', callback = api(peek)}
redis.register_function{function_name = 'devinfo', callback = api(devinfo), flags = {'no-writes'}}
redis.register_function('devset', api(devset))
redis.register_function{function_name = 'get', callback = api(get), flags = {'no-writes'}}
redis.register_function('list', api(list))

-- ---- registry ----------------------------------------------------------------------------------
-- The client registry (Duster's clients: login accounts of devices and operators) and its login
-- tokens. Every key shares the hash tag {reg}, so each function touches one slot on Redis Cluster;
-- KEYS[1] is <prefix>{reg} and ARGV[1] the prefix. Keys (dr/registry.h names them too):
--   {reg}c:<name>   hash: id, desc, role (DEVISE|MAN), pw (bcrypt), en (0|1), ct, ut (ms), gen
--   {reg}idx        sorted set of names, all scored 0: listing and prefix search by ZRANGEBYLEX
--   {reg}byid       hash: numeric id -> name (Duster's admin API addresses clients by number)
--   {reg}seq, {reg}gen  counters of numeric ids and of token generations
--   {reg}man        set of the names whose role is MAN (is there an operator at all?)
--   {reg}t:<sha256> string "<gen> <name>" with the token's expiry: a login token
--   {reg}lf:i:<name>, {reg}lf:a:<addr>  failed logins in the current window
-- A token is valid while its client exists, is enabled and still has the generation the token was
-- issued with: deleting, disabling, a password or role change take a new generation, which revokes
-- every token of the client at once without listing them.

local REG_FIELDS = {'id', 'desc', 'role', 'pw', 'en', 'ct', 'ut', 'gen'}

local function reg_key(keys, name) return keys[1] .. name end

local function reg_now()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A client as {name, id, desc, role, pw, en, ct, ut, gen}, or nil.
local function reg_load(keys, name)
  if not name then return nil end
  local v = rcall('HMGET', reg_key(keys, 'c:' .. name), unpack(REG_FIELDS))
  if not v[1] then return nil end
  return {name, v[1], v[2] or '', v[3] or 'DEVISE', v[4] or '', v[5] or '1', v[6] or '0', v[7] or '0', v[8] or '0'}
end

local function reg_by(keys, by, v)
  if by == 'id' then return reg_load(keys, rcall('HGET', reg_key(keys, 'byid'), v)) end
  return reg_load(keys, v)
end

-- reg_get: ARGV[2] 'id' or 'name', ARGV[3] the value. Returns a client or nil.
local function reg_get(keys, args)
  return reg_by(keys, args[2], args[3])
end

-- reg_create: ARGV[2..6] name, desc, role, pw hash, enabled. Returns the client, or the error EXISTS.
local function reg_create(keys, args)
  local name = args[2]
  local k = reg_key(keys, 'c:' .. name)
  if rcall('EXISTS', k) == 1 then return redis.error_reply('EXISTS client ' .. name .. ' exists') end
  local now = s(reg_now())
  local id = s(rcall('INCR', reg_key(keys, 'seq')))
  local gen = s(rcall('INCR', reg_key(keys, 'gen')))
  rcall('HSET', k, 'id', id, 'desc', args[3], 'role', args[4], 'pw', args[5], 'en', args[6], 'ct', now,
             'ut', now, 'gen', gen)
  rcall('HSET', reg_key(keys, 'byid'), id, name)
  rcall('ZADD', reg_key(keys, 'idx'), 0, name)
  if args[4] == 'MAN' then rcall('SADD', reg_key(keys, 'man'), name) end
  return reg_load(keys, name)
end

-- reg_update: ARGV[2] numeric id, then field/value pairs among desc, role, pw, en. Returns
-- {client, revoked (0|1)} or nil when there is no such client.
local function reg_update(keys, args)
  local c = reg_by(keys, 'id', args[2])
  if not c then return nil end
  local k = reg_key(keys, 'c:' .. c[1])
  local set, revoke = {}, false
  for i = 3, #args - 1, 2 do
    local f, v = args[i], args[i + 1]
    if (f == 'pw' and v ~= c[5]) or (f == 'role' and v ~= c[4]) or (f == 'en' and v == '0' and c[6] ~= '0') then
      revoke = true
    end
    set[#set + 1] = f
    set[#set + 1] = v
    if f == 'role' then
      if v == 'MAN' then rcall('SADD', reg_key(keys, 'man'), c[1])
      else rcall('SREM', reg_key(keys, 'man'), c[1]) end
    end
  end
  set[#set + 1] = 'ut'
  set[#set + 1] = s(reg_now())
  if revoke then
    set[#set + 1] = 'gen'
    set[#set + 1] = s(rcall('INCR', reg_key(keys, 'gen')))
  end
  rcall('HSET', k, unpack(set))
  return {reg_load(keys, c[1]), revoke and 1 or 0}
end

-- reg_delete: ARGV[2] 'id' or 'name', ARGV[3] the value. Returns the deleted client or nil.
local function reg_delete(keys, args)
  local c = reg_by(keys, args[2], args[3])
  if not c then return nil end
  rcall('DEL', reg_key(keys, 'c:' .. c[1]))
  rcall('HDEL', reg_key(keys, 'byid'), c[2])
  rcall('ZREM', reg_key(keys, 'idx'), c[1])
  rcall('SREM', reg_key(keys, 'man'), c[1])
  return c
end

-- reg_list: ARGV[2] name prefix ('' for all), ARGV[3] list after this name ('' from the start),
-- ARGV[4] limit. Returns {more (0|1), client...} in name order.
local function reg_list(keys, args)
  local prefix, after, limit = args[2], args[3], tonumber(args[4])
  local min = '[' .. prefix
  if after ~= '' and after >= prefix then min = '(' .. after end
  local max = prefix == '' and '+' or ('[' .. prefix .. '\255')
  local names = rcall('ZRANGEBYLEX', reg_key(keys, 'idx'), min, max, 'LIMIT', 0, limit + 1)
  local out = {#names > limit and 1 or 0}
  for i = 1, math.min(#names, limit) do
    local c = reg_load(keys, names[i])
    if c then out[#out + 1] = c end
  end
  return out
end

-- reg_bootstrap: ARGV[2] name, ARGV[3] pw hash. Creates the first operator when no MAN client
-- exists. Returns 1 (created), 0 (an operator exists) or -1 (the name is taken by a non-operator).
local function reg_bootstrap(keys, args)
  if rcall('SCARD', reg_key(keys, 'man')) > 0 then return 0 end
  if rcall('EXISTS', reg_key(keys, 'c:' .. args[2])) == 1 then return -1 end
  reg_create(keys, {args[1], args[2], 'first operator, created at the first start', 'MAN', args[3], '1'})
  return 1
end

-- reg_login: ARGV[2] name, ARGV[3] source address, ARGV[4] failures allowed per window. Returns
-- {wait_ms} when either failure counter is at the limit (wait_ms > 0), else {0, client or nil}.
local function reg_login(keys, args)
  local limit = tonumber(args[4])
  local wait = 0
  for _, k in ipairs({reg_key(keys, 'lf:i:' .. args[2]), reg_key(keys, 'lf:a:' .. args[3])}) do
    local n = tonumber(rcall('GET', k) or '0')
    if n >= limit then wait = math.max(wait, rcall('PTTL', k), 1) end
  end
  if wait > 0 then return {wait} end
  return {0, reg_load(keys, args[2])}
end

-- reg_failed: ARGV[2] name, ARGV[3] source address, ARGV[4] window (ms). Counts a failed login.
local function reg_failed(keys, args)
  for _, k in ipairs({reg_key(keys, 'lf:i:' .. args[2]), reg_key(keys, 'lf:a:' .. args[3])}) do
    if rcall('INCR', k) == 1 then rcall('PEXPIRE', k, args[4]) end
  end
  return 1
end

-- reg_token_issue: ARGV[2] token hash, ARGV[3] name, ARGV[4] generation the password was checked
-- against, ARGV[5] lifetime (ms). Returns the client, or nil when it changed since (deleted,
-- disabled, new password): the login then fails.
local function reg_token_issue(keys, args)
  local c = reg_load(keys, args[3])
  if not c or c[6] ~= '1' or c[9] ~= args[4] then return nil end
  rcall('SET', reg_key(keys, 't:' .. args[2]), c[9] .. ' ' .. c[1], 'PX', args[5])
  rcall('DEL', reg_key(keys, 'lf:i:' .. c[1]))
  return c
end

-- reg_token_check: ARGV[2] token hash. Returns {client, remaining ms} or nil.
local function reg_token_check(keys, args)
  local k = reg_key(keys, 't:' .. args[2])
  local v = rcall('GET', k)
  if not v then return nil end
  local sp = string.find(v, ' ', 1, true)
  local c = reg_load(keys, string.sub(v, sp + 1))
  if not c or c[6] ~= '1' or c[9] ~= string.sub(v, 1, sp - 1) then return nil end
  return {c, rcall('PTTL', k)}
end

-- reg_token_revoke: ARGV[2] token hash. Returns 1 when the token existed.
local function reg_token_revoke(keys, args)
  return rcall('DEL', reg_key(keys, 't:' .. args[2]))
end

redis.register_function{function_name = 'reg_get', callback = api(reg_get), flags = {'no-writes'}}
redis.register_function('reg_create', api(reg_create))
redis.register_function('reg_update', api(reg_update))
redis.register_function('reg_delete', api(reg_delete))
redis.register_function{function_name = 'reg_list', callback = api(reg_list), flags = {'no-writes'}}
redis.register_function('reg_bootstrap', api(reg_bootstrap))
redis.register_function('reg_login', api(reg_login))
redis.register_function('reg_failed', api(reg_failed))
redis.register_function('reg_token_issue', api(reg_token_issue))
redis.register_function{function_name = 'reg_token_check', callback = api(reg_token_check), flags = {'no-writes'}}
redis.register_function('reg_token_revoke', api(reg_token_revoke))

-- ---- backlog gauges ------------------------------------------------------------------------------

-- backlog: what waits for delivery in the given shards, for the dispatcher's gauges. Looks at the
-- first max entries of each shard's 'due' set (every device with work is there; it passes over the
-- deadlines): the devices' stream lengths (queued, in flight included), their in-flight entries and
-- their not-before schedules.
-- The oldest pending message is the earliest first stream entry: entry ids are the acceptance time
-- (XADD '*', Redis's clock). KEYS: <prefix>{<shard>} per shard. ARGV[5]: max devices per shard;
-- ARGV[6..]: shards. Returns {queued, in flight, scheduled, age of the oldest queued message in ms
-- (-1 when none), schedule entries not looked at (over max)}. Read-only.
local function backlog(keys, args)
  local c = ctx(args)
  local max = tonumber(args[5])
  local queued, inflight, scheduled, oldest, skipped = 0, 0, 0, -1, 0
  for i = 6, #args do
    local sh = tonumber(args[i])
    local dk = key(c, sh, 'due')
    local total = rcall('ZCARD', dk)
    if total > max then skipped = skipped + total - max end
    for _, dev in ipairs(rcall('ZRANGE', dk, 0, max - 1)) do
      if string.byte(dev, 1) ~= 35 then -- '#m<b>' and '#<id>' are deadlines, not devices
        local q = qkey(c, sh, dev)
        queued = queued + rcall('XLEN', q)
        local p = rpcall('XPENDING', q, GROUP)
        if not failed(p) then inflight = inflight + p[1] end
        scheduled = scheduled + rcall('ZCARD', key(c, sh, 'sc:' .. dev))
        -- The queue's first entry: with entries in flight, the oldest of them (an entry leaves the
        -- group's pending list and the queue together, and the group reads in order), else a read.
        local first = not failed(p) and p[1] > 0 and p[2]
        if not first then
          local e = rcall('XRANGE', q, '-', '+', 'COUNT', 1)[1]
          first = e and e[1]
        end
        if first then
          local ms = tonumber(string.match(first, '^(%d+)'))
          if oldest < 0 or ms < oldest then oldest = ms end
        end
      end
    end
  end
  local age = -1
  if oldest >= 0 then age = math.max(0, c.now - oldest) end
  return {queued, inflight, scheduled, age, skipped}
end

redis.register_function{function_name = 'backlog', callback = api(backlog), flags = {'no-writes'}}

-- ---- console: saved commands -------------------------------------------------------------------
-- Duster's saved messages: commands an operator keeps per device and sends with one click. They live
-- beside the registry, under its hash tag (KEYS[1] is <prefix>{reg}):
--   {reg}sm:<id>     hash: cid (owner client id), dev (owner deviseId), desc, cmd, g, data ('' = null),
--                    ct, ut (ms)
--   {reg}smseq       counter of saved command ids
--   {reg}sms         sorted set of every saved command id (score = id)
--   {reg}smd:<dev>   sorted set of one device's saved command ids (score = id); at most ARGV max

-- A saved command as {id, cid, dev, desc, cmd, g, data}, or nil.
local function sm_load(keys, id)
  local v = rcall('HMGET', keys[1] .. 'sm:' .. id, 'cid', 'dev', 'desc', 'cmd', 'g', 'data')
  if not v[1] then return nil end
  return {id, v[1], v[2] or '', v[3] or '', v[4] or '', v[5] or 'NO', v[6] or ''}
end

-- sm_put: creates (ARGV[2] = '') or updates saved command ARGV[2]. ARGV[3..7]: owner client id,
-- description, command, guarantee, data ('' leaves a field as it is on update; data '-' is null);
-- ARGV[8]: most saved commands per device. Returns {'OK', saved} or {code}: NOT_FOUND, NO_CLIENT
-- (no such client), NOT_DEVISE (the client is an operator), FULL (the device has the most already).
local function sm_put(keys, args)
  local id, cid, desc, cmd, g, data, max = args[2], args[3], args[4], args[5], args[6], args[7], tonumber(args[8])
  local cur = nil
  if id ~= '' then
    cur = sm_load(keys, id)
    if not cur then return {'NOT_FOUND'} end
  end
  local dev = cur and cur[3] or nil
  if cid ~= '' then
    local name = rcall('HGET', keys[1] .. 'byid', cid)
    if not name then return {'NO_CLIENT'} end
    local role = rcall('HGET', keys[1] .. 'c:' .. name, 'role') or 'DEVISE'
    if role ~= 'DEVISE' then return {'NOT_DEVISE'} end
    dev = name
  end
  if not cur or dev ~= cur[3] then
    if rcall('ZCARD', keys[1] .. 'smd:' .. dev) >= max then return {'FULL'} end
  end
  local now = s(reg_now())
  if not cur then
    id = s(rcall('INCR', keys[1] .. 'smseq'))
    rcall('HSET', keys[1] .. 'sm:' .. id, 'ct', now)
  elseif dev ~= cur[3] then
    rcall('ZREM', keys[1] .. 'smd:' .. cur[3], id)
  end
  local set = {'ut', now, 'dev', dev}
  if cid ~= '' then set[#set + 1] = 'cid'; set[#set + 1] = cid end
  if desc ~= '' then set[#set + 1] = 'desc'; set[#set + 1] = desc end
  if cmd ~= '' then set[#set + 1] = 'cmd'; set[#set + 1] = cmd end
  if g ~= '' then set[#set + 1] = 'g'; set[#set + 1] = g end
  if data == '-' then set[#set + 1] = 'data'; set[#set + 1] = ''
  elseif data ~= '' then set[#set + 1] = 'data'; set[#set + 1] = data end
  rcall('HSET', keys[1] .. 'sm:' .. id, unpack(set))
  rcall('ZADD', keys[1] .. 'sms', tonumber(id), id)
  rcall('ZADD', keys[1] .. 'smd:' .. dev, tonumber(id), id)
  return {'OK', sm_load(keys, id)}
end

-- sm_list: ARGV[2] 'all', 'id' (ARGV[3] a saved command id), 'cid' (ARGV[3] an owner client id) or
-- 'dev' (ARGV[3] an owner deviseId); ARGV[4] at most this many. Returns saved commands, id descending.
local function sm_list(keys, args)
  local by, v, limit = args[2], args[3], tonumber(args[4])
  if by == 'id' then return {sm_load(keys, v)} end
  local set = keys[1] .. 'sms'
  if by == 'cid' then
    local name = rcall('HGET', keys[1] .. 'byid', v)
    if not name then return {} end
    set = keys[1] .. 'smd:' .. name
  elseif by == 'dev' then
    set = keys[1] .. 'smd:' .. v
  end
  local out = {}
  for _, id in ipairs(rcall('ZRANGE', set, '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit)) do
    local m = sm_load(keys, id)
    if m and (by ~= 'cid' or m[2] == v) then out[#out + 1] = m end
  end
  return out
end

-- sm_del: deletes saved command ARGV[2]. Returns 1, or 0 when there is none.
local function sm_del(keys, args)
  local m = sm_load(keys, args[2])
  if not m then return 0 end
  rcall('DEL', keys[1] .. 'sm:' .. args[2])
  rcall('ZREM', keys[1] .. 'sms', args[2])
  rcall('ZREM', keys[1] .. 'smd:' .. m[3], args[2])
  return 1
end

redis.register_function('sm_put', api(sm_put))
redis.register_function{function_name = 'sm_list', callback = api(sm_list), flags = {'no-writes'}}
redis.register_function('sm_del', api(sm_del))

-- ---- console: fleet views ----------------------------------------------------------------------
-- Message ids of a shard grow with acceptance time (n = id div S comes from the shard's counter), so
-- the records themselves are the time-ordered index; {s}ix only maps time to position: accept_one
-- adds the id of every 64th message of the shard (n mod 64 = 1) scored by its acceptance time, and
-- drops entries older than the retention. That costs about 1.5 bytes per message. A search walks each
-- shard's records downwards from the position ix gives for the cursor and merges the shards of one
-- call newest first. (After the counter wraps at ids.max the order restarts; the walk stops at the
-- oldest ix entry, so a wrapped shard lists its newest ids only.)

-- con_search: KEYS: <prefix>{<shard>} per shard of the call. ARGV[5..]: cursor time and id (0 0:
-- from the newest; else strictly older than (time, id)), from, to (ms, 0: none), device ('' any: then
-- its shard must be the only one), status name ('' any), command ('' any), owner API key id ('' any;
-- else only messages of that key or submitted without one), limit, budget (records examined at
-- most), largest id, then the shards. Returns {done (1: nothing older left), resume time, resume id,
-- then 8 values per message: id, device, command, status, guarantee, accepted, changed, attempts}.
-- When done is 0 every message at or after (resume time, resume id) has been examined.
local function con_search(keys, args)
  local c = ctx(args)
  local ct, ci, from, to = tonumber(args[5]), tonumber(args[6]), tonumber(args[7]), tonumber(args[8])
  local dev, stf, cmd, owner = args[9], args[10], args[11], args[12]
  local limit, budget, idmax = tonumber(args[13]), tonumber(args[14]), tonumber(args[15])
  if to > 0 and (ct == 0 or to < ct) then ct, ci = to, math.huge end
  local cur = {}
  local function older(t, id) return ct == 0 or t < ct or (t == ct and id < ci) end
  -- one walker per shard: .n next position, .min lowest position, .m loaded candidate
  local function fetch(w)
    while w.m == nil and budget > 0 do
      if w.ids then
        local id = table.remove(w.ids, 1)
        if not id then return end
        budget = budget - 1
        w.m = load(c, tonumber(id))
      else
        if w.n < w.min then return end
        local bk = key(c, w.sh, 'm:' .. s(math.floor(w.n / BUCKET)))
        budget = budget - 1
        if rcall('EXISTS', bk) == 0 then
          w.n = math.floor(w.n / BUCKET) * BUCKET - 1
        else
          w.m = load(c, w.n * c.S + w.sh)
          w.n = w.n - 1
        end
      end
      if w.m and (not older(w.m.r[R_TS], w.m.id)) then w.m = nil end
      if w.m and from > 0 and w.m.r[R_TS] < from then w.m = nil; w.n = -1; w.ids = {} ; return end
    end
  end
  for i = 16, #args do
    local sh = tonumber(args[i])
    local w = {sh = sh}
    if dev ~= '' then
      local hi = '+inf'
      if ci > 0 and ci ~= math.huge then hi = '(' .. s(ci) end
      w.ids = rcall('ZRANGE', key(c, sh, 'dm:' .. dev), hi, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, budget)
    else
      local raw = tonumber(rcall('GET', key(c, sh, 'seq')) or '0')
      local nmax = math.floor((idmax - sh) / c.S)
      if raw > 0 and nmax >= 1 then
        w.n = (raw - 1) % nmax + 1
        local ix = key(c, sh, 'ix')
        if ct > 0 then
          local a = rcall('ZRANGE', ix, '(' .. s(ct), '+inf', 'BYSCORE', 'LIMIT', 0, 1)
          if a[1] then w.n = math.min(w.n, (tonumber(a[1]) - sh) / c.S) end
        end
        local o = rcall('ZRANGE', ix, 0, 0)
        w.min = o[1] and (tonumber(o[1]) - sh) / c.S or 1
        if raw > nmax then w.min = 1 end
      else
        w.n, w.min = 0, 1
      end
    end
    cur[#cur + 1] = w
  end
  local out = {0, '0', '0'}
  local found, lt, li = 0, nil, nil
  while found < limit do
    local best = nil
    for _, w in ipairs(cur) do
      fetch(w)
      if w.m and (best == nil or w.m.r[R_TS] > best.m.r[R_TS] or
                  (w.m.r[R_TS] == best.m.r[R_TS] and w.m.id > best.m.id)) then best = w end
    end
    if best == nil then break end
    local m = best.m
    best.m = nil
    local r = m.r
    lt, li = r[R_TS], m.id
    if (dev == '' or r[R_DEV] == dev) and (stf == '' or STN[r[R_ST]] == stf) and (cmd == '' or r[R_CMD] == cmd) and
        (owner == '' or r[R_KEY] == owner or r[R_KEY] == '') then
      found = found + 1
      local n = #out
      out[n + 1], out[n + 2], out[n + 3], out[n + 4] = s(m.id), r[R_DEV], r[R_CMD], STN[r[R_ST]]
      out[n + 5], out[n + 6], out[n + 7], out[n + 8] = GN[r[R_G]], s(r[R_TS]), s(r[R_CHG]), s(r[R_ATT])
    end
  end
  local more = false
  for _, w in ipairs(cur) do
    if w.m then more = true end
    if w.ids and #w.ids > 0 then more = true end
    if not w.ids and w.n and w.n >= (w.min or 1) then more = true end
  end
  if found >= limit then more = true end
  if not more then out[1] = 1 end
  if lt then out[2], out[3] = s(lt), s(li)
  elseif ct > 0 then out[2], out[3] = s(ct), ci == math.huge and '9007199254740991' or s(ci) end
  if more and not lt and ct == 0 then out[1] = 0; out[2], out[3] = s(c.now + 1), '0' end
  return out
end

-- con_devices: a page of the names in each shard's device index {s}dx (see wake) that start with
-- ARGV[5] and sort after ARGV[6] ('' from the start), at most ARGV[7] names examined per shard. A
-- name whose device has neither work (in 'due') nor state ({s}d:<dev>) left is removed from the index
-- as it is met, so each stale name costs one examination ever. KEYS: <prefix>{<shard>} per shard of
-- the call; ARGV[8..]: the shards. Returns {cut, name...} in name order: cut is '' when every
-- shard's matching names were examined, else the lowest last name examined by a shard that may have
-- more; only names up to cut are returned, and every name up to cut was examined.
local function con_devices(keys, args)
  local c = ctx(args)
  local prefix, after, limit = args[5], args[6], tonumber(args[7])
  local min = '[' .. prefix
  if after ~= '' and after >= prefix then min = '(' .. after end
  local max = prefix == '' and '+' or ('[' .. prefix .. '\255')
  local names, cut = {}, nil
  for i = 8, #args do
    local sh = tonumber(args[i])
    local dx = key(c, sh, 'dx')
    local page = rcall('ZRANGEBYLEX', dx, min, max, 'LIMIT', 0, limit)
    for _, dev in ipairs(page) do
      if rcall('ZSCORE', key(c, sh, 'due'), dev) or rcall('EXISTS', dkey(c, sh, dev)) == 1 then
        names[#names + 1] = dev
      else
        rcall('ZREM', dx, dev)
      end
    end
    if #page >= limit and (cut == nil or page[#page] < cut) then cut = page[#page] end
  end
  table.sort(names)
  local out = {cut or ''}
  for _, dev in ipairs(names) do
    if cut == nil or dev <= cut then out[#out + 1] = dev end
  end
  return out
end

-- con_devinfo: devinfo of many devices. KEYS: <prefix>{<shard>} per shard involved. ARGV[5..]:
-- pairs of shard and device. Returns 10 strings per device, as devinfo ('' for values never set).
local function con_devinfo(keys, args)
  local out = {}
  for i = 5, #args - 1, 2 do
    local v = devinfo(keys, {args[1], args[2], args[3], args[4], args[i + 1], args[i]})
    for j = 1, 10 do out[#out + 1] = type(v[j]) == 'number' and s(v[j]) or v[j] end
  end
  return out
end

redis.register_function{function_name = 'con_search', callback = api(con_search), flags = {'no-writes'}}
redis.register_function('con_devices', api(con_devices))
redis.register_function{function_name = 'con_devinfo', callback = api(con_devinfo), flags = {'no-writes'}}

-- ---- rollouts ----------------------------------------------------------------------------------
-- A rollout sends one command to many devices at a bounded rate. Its state shares the hash tag
-- {ro}, so each function below touches one slot; KEYS[1] is <prefix>{ro}. Keys:
--   {ro}seq            counter of rollout ids
--   {ro}r:<id>         hash: st (running|paused|cancelled|done), cmd, data, g, ttl, rate, bu (burst),
--                      own (creating API key id, '' for operators), total, enq (devices enqueued:
--                      every index below it has a message), tk (next index to hand out), tok and tt
--                      (token bucket: tokens and when they were counted), ct, ut
--   {ro}dv:<id>        list of the devices, in the order they are enqueued
--   {ro}mi:<id>        hash: device index -> message id ('-' when the store refused the message)
--   {ro}all, {ro}own:<key id>  sorted sets of rollout ids (score = id): listing, newest first
--   {ro}run            set of the running rollouts: what ingress nodes advance
--   {ro}ls:<id>        lease: the node that advances the rollout, with a short expiry
--   {ro}fin            sorted set of finished rollouts ('id owner', score = when they expire; ro_finish)
-- A node takes a batch of devices (ro_take), accepts each through the normal acceptance path with
-- the idempotency key ro:<id>:<index>, and records the message ids (ro_done). Every take hands out
-- from enq, the first device without a recorded message, so devices a dead node (or a failed write)
-- took but did not record are accepted again; the idempotency key turns that into the original
-- message.

local RO_FIELDS = {'st', 'cmd', 'g', 'rate', 'total', 'enq', 'ct', 'ut', 'own', 'data', 'ttl'}

-- A rollout as {id, st, cmd, g, rate, total, enq, ct, ut, own, data, ttl}, or nil.
local function ro_load(keys, id)
  local v = rcall('HMGET', keys[1] .. 'r:' .. id, unpack(RO_FIELDS))
  if not v[1] then return nil end
  local out = {id}
  for i = 1, #RO_FIELDS do out[#out + 1] = v[i] or '' end
  return out
end

-- Loads rollout id when the caller may see it (owner '' sees all).
local function ro_visible(keys, id, owner)
  local ro = ro_load(keys, id)
  if not ro or (owner ~= '' and ro[10] ~= owner) then return nil end
  return ro
end

-- A finished (done or cancelled) rollout is kept until its last message's deadline has passed and
-- that message's retention with it ('ret' in s, computed by the caller); then its keys expire and it
-- leaves the listings: {ro}fin holds 'id owner' per finished rollout, scored by that time, and every
-- create removes the ids whose time has come (ro_prune). Called again, it starts the time again.
local function ro_finish(keys, id)
  local v = rcall('HMGET', keys[1] .. 'r:' .. id, 'ret', 'own')
  local ret = tonumber(v[1]) or 0
  if ret <= 0 then return end -- no deadline, or created by a release that recorded none: kept
  for _, k in ipairs({'r:', 'dv:', 'mi:'}) do rcall('EXPIRE', keys[1] .. k .. id, ret) end
  rcall('ZADD', keys[1] .. 'fin', reg_now() + ret * 1000, id .. ' ' .. (v[2] or ''))
end

-- Removes up to 100 expired rollouts from the listings (see ro_finish).
local function ro_prune(keys)
  local fk = keys[1] .. 'fin'
  local gone = rcall('ZRANGE', fk, '-inf', s(reg_now()), 'BYSCORE', 'LIMIT', 0, 100)
  for _, v in ipairs(gone) do
    local sp = string.find(v, ' ', 1, true)
    local id, owner = string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
    if rcall('EXISTS', keys[1] .. 'r:' .. id) == 0 then -- not finished again meanwhile
      rcall('ZREM', keys[1] .. 'all', id)
      if owner ~= '' then rcall('ZREM', keys[1] .. 'own:' .. owner, id) end
    end
    rcall('ZREM', fk, v)
  end
end

-- ro_create: ARGV[1..9] prefix, owner, command, data, guarantee, ttl ms, rate, burst, how long the
-- rollout is kept once finished (s, 0: for ever; see ro_finish); ARGV[10..] the devices. Returns the
-- rollout.
local function ro_create(keys, args)
  local now = s(reg_now())
  local id = s(rcall('INCR', keys[1] .. 'seq'))
  local n = #args - 9
  rcall('HSET', keys[1] .. 'r:' .. id, 'st', 'running', 'own', args[2], 'cmd', args[3], 'data', args[4], 'g',
             args[5], 'ttl', args[6], 'rate', args[7], 'bu', args[8], 'total', n, 'enq', 0, 'tk', 0, 'tok', args[8],
             'tt', now, 'ct', now, 'ut', now, 'ret', args[9])
  for i = 10, #args, 1000 do
    rcall('RPUSH', keys[1] .. 'dv:' .. id, unpack(args, i, math.min(#args, i + 999)))
  end
  ro_prune(keys)
  rcall('ZADD', keys[1] .. 'all', id, id)
  if args[2] ~= '' then rcall('ZADD', keys[1] .. 'own:' .. args[2], id, id) end
  rcall('SADD', keys[1] .. 'run', id)
  return ro_load(keys, id)
end

-- ro_get: ARGV[2..4] id, owner ('' any), with ids (1: also the message ids). Returns {rollout,
-- id...} or {} when there is no such rollout for this owner.
local function ro_get(keys, args)
  local ro = ro_visible(keys, args[2], args[3])
  if not ro then return {} end
  local out = {ro}
  if args[4] == '1' then
    for _, v in ipairs(rcall('HVALS', keys[1] .. 'mi:' .. args[2])) do out[#out + 1] = v end
  end
  return out
end

-- ro_list: ARGV[2..4] owner ('' all), after (0: from the newest), limit. Returns {more, rollout...}
-- newest first.
-- Ids of rollouts that expired and were not pruned yet are passed over: a page holds limit live
-- rollouts when there are that many, and more is 1 only when a live one follows.
local function ro_list(keys, args)
  local owner, after, limit = args[2], tonumber(args[3]), tonumber(args[4])
  local z = owner == '' and keys[1] .. 'all' or keys[1] .. 'own:' .. owner
  local hi = after > 0 and '(' .. s(after) or '+inf'
  local out = {0}
  while true do
    local ids = rcall('ZRANGE', z, hi, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, limit + 1)
    for _, id in ipairs(ids) do
      local ro = ro_load(keys, id)
      if ro then
        if #out > limit then out[1] = 1; return out end
        out[#out + 1] = ro
      end
      hi = '(' .. id
    end
    if #ids <= limit then return out end
  end
end

-- ro_ctl: ARGV[2..4] id, owner, 'pause' | 'resume' | 'cancel'. Returns {'OK', rollout, message
-- id... (cancel: every message enqueued so far)}, {'NOT_FOUND'}, or {'NOT_RUNNING' | 'NOT_PAUSED' |
-- 'FINISHED', rollout} when the state does not allow the change.
local function ro_ctl(keys, args)
  local id, op = args[2], args[4]
  local ro = ro_visible(keys, id, args[3])
  if not ro then return {'NOT_FOUND'} end
  local rk, st, now = keys[1] .. 'r:' .. id, ro[2], s(reg_now())
  if op == 'pause' then
    if st ~= 'running' then return {'NOT_RUNNING', ro} end
    rcall('HSET', rk, 'st', 'paused', 'ut', now)
    rcall('SREM', keys[1] .. 'run', id)
  elseif op == 'resume' then
    if st ~= 'paused' then return {'NOT_PAUSED', ro} end
    -- the bucket refills from now: a long pause does not buy a burst
    rcall('HSET', rk, 'st', 'running', 'ut', now, 'tt', now, 'tok', 0)
    rcall('SADD', keys[1] .. 'run', id)
  elseif op == 'cancel' then
    if st ~= 'running' and st ~= 'paused' then return {'FINISHED', ro} end
    rcall('HSET', rk, 'st', 'cancelled', 'ut', now)
    rcall('SREM', keys[1] .. 'run', id)
    rcall('DEL', keys[1] .. 'ls:' .. id)
    ro_finish(keys, id)
  else
    return redis.error_reply('ERR unknown rollout operation')
  end
  local out = {'OK', ro_load(keys, id)}
  if op == 'cancel' then
    for _, v in ipairs(rcall('HVALS', keys[1] .. 'mi:' .. id)) do out[#out + 1] = v end
  end
  return out
end

-- ro_take: hands the calling node the next devices of the running rollouts it holds or can claim.
-- ARGV[2..5] holder (node id and process nonce), lease ms, most devices per rollout, most rollouts.
-- A rollout's bucket gains rate tokens per second up to its burst; a device costs one token.
-- Returns per rollout with devices to send {id, first index, command, data, guarantee, ttl, owner,
-- device...}; a rollout whose devices are all enqueued becomes done.
local function ro_take(keys, args)
  local holder, lease_ms, per, most = args[2], tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  local now = reg_now()
  local out = {}
  for _, id in ipairs(rcall('SRANDMEMBER', keys[1] .. 'run', most)) do
    local rk, lk = keys[1] .. 'r:' .. id, keys[1] .. 'ls:' .. id
    local v = rcall('HMGET', rk, 'st', 'total', 'enq', 'tk', 'tok', 'tt', 'rate', 'bu', 'cmd', 'data', 'g', 'ttl',
                         'own')
    local lease = rcall('GET', lk)
    if v[1] ~= 'running' then
      rcall('SREM', keys[1] .. 'run', id)
    elseif lease == false or lease == holder then
      local total, enq, tk = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
      rcall('SET', lk, holder, 'PX', lease_ms)
      -- A holder takes again only after its previous batches were recorded or failed, so anything
      -- handed out but not recorded (by it, or by a holder whose lease expired) goes out again.
      tk = enq
      local rate, bu = tonumber(v[7]), tonumber(v[8])
      local tok = math.min(bu, tonumber(v[5]) + math.max(0, now - tonumber(v[6])) * rate / 1000)
      local k = math.min(math.floor(tok), total - tk, per)
      if enq >= total then
        rcall('HSET', rk, 'st', 'done', 'ut', s(now))
        rcall('SREM', keys[1] .. 'run', id)
        rcall('DEL', lk)
        ro_finish(keys, id)
      else
        if k > 0 then
          local b = {id, s(tk), v[9], v[10], v[11], v[12], v[13]}
          for _, dev in ipairs(rcall('LRANGE', keys[1] .. 'dv:' .. id, tk, tk + k - 1)) do b[#b + 1] = dev end
          out[#out + 1] = b
          tk, tok = tk + k, tok - k
        end
        rcall('HSET', rk, 'tk', tk, 'tok', tostring(tok), 'tt', s(now))
      end
    end
  end
  return out
end

-- ro_done: records what became of devices first..first+n-1 of rollout ARGV[2]: ARGV[3] first
-- index, ARGV[4..] per device the message id, '-' (refused: counted as failed) or '' (not stored:
-- handed out again). Returns the rollout's state; 'cancelled' tells the caller to cancel the ids it
-- just stored (the rollout was cancelled while they were being accepted).
local function ro_done(keys, args)
  local id, first = args[2], tonumber(args[3])
  local rk, mk = keys[1] .. 'r:' .. id, keys[1] .. 'mi:' .. id
  local v = rcall('HMGET', rk, 'st', 'total', 'enq', 'tk')
  if not v[1] then return '' end
  local total, enq, tk = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
  for i = 4, #args do
    local idx = first + i - 4
    if args[i] ~= '' then rcall('HSET', mk, s(idx), args[i]) elseif idx < tk then tk = idx end
  end
  while enq < total and rcall('HEXISTS', mk, s(enq)) == 1 do enq = enq + 1 end
  if tk < enq then tk = enq end
  local st = v[1]
  rcall('HSET', rk, 'enq', enq, 'tk', tk, 'ut', s(reg_now()))
  if enq >= total and st == 'running' then
    st = 'done'
    rcall('HSET', rk, 'st', st)
    rcall('SREM', keys[1] .. 'run', id)
    rcall('DEL', keys[1] .. 'ls:' .. id)
    ro_finish(keys, id)
  elseif st == 'cancelled' or st == 'done' then
    ro_finish(keys, id) -- recorded after the end (cancelled meanwhile): mi: may be new, and expires too
  end
  return st
end

-- ro_count: how many of the given messages are in each outcome. KEYS: <prefix>{<shard>} per shard
-- involved. ARGV[5..]: message ids. Returns {queued, sent, delivered, completed, completed with
-- error, failed, expired, cancelled, gone (record retired past the retention)}.
local function ro_count(keys, args)
  local c = ctx(args)
  local n = {0, 0, 0, 0, 0, 0, 0, 0, 0}
  local slot = {[2] = 3, [3] = 4, [4] = 5, [7] = 6, [6] = 7, [5] = 8, [8] = 8}
  for i = 5, #args do
    local m = load(c, tonumber(args[i]))
    local k = 9
    if m then
      local st = m.r[R_ST]
      if st == 0 or st == 1 then k = (m.r[R_ATT] == 0) and 1 or 2 else k = slot[st] or 9 end
    end
    n[k] = n[k] + 1
  end
  return n
end

redis.register_function('ro_create', api(ro_create))
redis.register_function{function_name = 'ro_get', callback = api(ro_get), flags = {'no-writes'}}
redis.register_function{function_name = 'ro_list', callback = api(ro_list), flags = {'no-writes'}}
redis.register_function('ro_ctl', api(ro_ctl))
redis.register_function('ro_take', api(ro_take))
redis.register_function('ro_done', api(ro_done))
redis.register_function{function_name = 'ro_count', callback = api(ro_count), flags = {'no-writes'}}

-- ---- API keys ----------------------------------------------------------------------------------
-- REST's key management; the hash <prefix>ak:<id> is the one drover-ctl writes and auth.c reads
-- (h: SHA-256 of the key, scope, dev, name, created ms, revoked 0|1). KEYS[1] = <prefix>ak:<id>.

-- ak_create: ARGV[1..4] hash, scope, device, name. Returns the creation time, or 0 when the id is
-- taken (the caller generates another key).
local function ak_create(keys, args)
  if rcall('HSETNX', keys[1], 'h', args[1]) == 0 then return 0 end
  local now = reg_now()
  rcall('HSET', keys[1], 'scope', args[2], 'dev', args[3], 'name', args[4], 'created', s(now), 'revoked', '0')
  return now
end

-- ak_revoke: Returns 1 when the key exists (it is revoked now), else 0.
local function ak_revoke(keys, args)
  if rcall('EXISTS', keys[1]) == 0 then return 0 end
  rcall('HSET', keys[1], 'revoked', '1')
  return 1
end

redis.register_function('ak_create', api(ak_create))
redis.register_function('ak_revoke', api(ak_revoke))
