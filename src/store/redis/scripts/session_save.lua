-- Writes a session and its account-slot index entries in one atomic step,
-- if the writer's view still holds.
--
-- KEYS[1] the session hash     P{U}:session:<sessionId>
-- KEYS[2] the room hash        P{U}:room:<roomId>
-- KEYS[3] all sessions zset    P{U}:sessions          (member sessionId, score start ms)
-- KEYS[4] ongoing zset         P{U}:sessions:ongoing
-- KEYS[5] ended zset           P{U}:sessions:ended
-- KEYS[6] the room's sessions  P{U}:rsessions:<roomId>
-- KEYS[7] the live marker      P{U}:live:<roomId>     (sessionId, expiring at the due time)
-- KEYS[8] the event log        P{U}:events            (stream)
-- ARGV[1] sessionId
-- ARGV[2] expected version, or "" for a session that must not exist yet
-- ARGV[3] for a new session: the room's latest sessionId as read, or ""
-- ARGV[4] the session as JSON
-- ARGV[5] start, unix ms
-- ARGV[6] "o" ongoing or "e" ended
-- ARGV[7] due, unix ms (ongoing sessions)
-- ARGV[8] "1": refuse when the room is disabled
-- ARGV[9] "1": disable the room in the same step
-- ARGV[10] now, unix ms
-- ARGV[11] how many events the save makes (may be absent: none), then five
--          values per event: roomId, kind, data JSON, at ms, and the
--          replayed event's id or "" (the entry then has no "p" field)
--
-- Returns {"saved", version, eventId...} | {"conflict"} | {"room-disabled"}
-- | {"room-missing"}. The events are appended only when the session is
-- saved, in the same step, so neither exists without the other.

local id = ARGV[1]

if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'room-missing'}
end

local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[2] == '' then
  if current then
    return {'conflict'}
  end
  local latest = redis.call('ZREVRANGE', KEYS[6], 0, 0)[1] or ''
  if latest ~= ARGV[3] then
    return {'conflict'}
  end
elseif current ~= ARGV[2] then
  return {'conflict'}
end

if ARGV[8] == '1' and redis.call('HEXISTS', KEYS[2], 'd') == 1 then
  return {'room-disabled'}
end

if ARGV[9] == '1' and redis.call('HEXISTS', KEYS[2], 'd') == 0 then
  -- As set_disabled.lua: updated-at never moves backwards.
  local previous = redis.call('HGET', KEYS[2], 'u') or redis.call('HGET', KEYS[2], 't')
  local updated = ARGV[10]
  if previous and tonumber(previous) and tonumber(previous) > tonumber(updated) then
    updated = previous
  end
  redis.call('HSET', KEYS[2], 'd', '1', 'u', updated)
end

local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'j', ARGV[4], 'st', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[5], id)
redis.call('ZADD', KEYS[6], ARGV[5], id)
if ARGV[6] == 'o' then
  redis.call('ZADD', KEYS[4], ARGV[5], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('SET', KEYS[7], id, 'PXAT', ARGV[7])
else
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], ARGV[5], id)
  if redis.call('GET', KEYS[7]) == id then
    redis.call('DEL', KEYS[7])
  end
end

local saved = {'saved', version}
for i = 0, tonumber(ARGV[11] or '0') - 1 do
  local at = 12 + i * 5
  local fields = {'r', ARGV[at], 'k', ARGV[at + 1], 'd', ARGV[at + 2], 't', ARGV[at + 3]}
  if ARGV[at + 4] ~= '' then
    fields[#fields + 1] = 'p'
    fields[#fields + 1] = ARGV[at + 4]
  end
  saved[#saved + 1] = redis.call('XADD', KEYS[8], '*', unpack(fields))
end
return saved
