-- Applies a change to an account's delivery state, atomically, if the
-- writer still holds the delivery lease (a fencing check: a replica that
-- lost its lease writes nothing).
--
-- KEYS[1] the lease          P{U}:dlease
-- KEYS[2] the delivery hash  P{U}:deliveries  (a: assigned id, t: trimmed
--                                              before, r:<roomId>: queue JSON)
-- KEYS[3] recent attempts    P{U}:dlog        (list, newest first)
-- KEYS[4] dead letters       P{U}:dead        (list, newest first)
-- KEYS[5] the event log      P{U}:events      (stream)
-- ARGV[1] the holder
-- ARGV[2] every event up to this id is assigned, or "" (left as is)
-- ARGV[3] trim the log before this id, or "" (no trim)
-- ARGV[4] how many recent attempts to keep, ARGV[5] how many dead letters
-- ARGV[6] n, then n pairs: roomId, its queue as JSON or "" to remove it
-- then m, then m records (JSON) to add to the recent attempts, in order
-- then d, then d records (JSON) to add to the dead letters, in order
--
-- Returns 1 when applied, 0 when the lease is not the holder's (nothing
-- written). Ids are compared as numbers (milliseconds, then sequence), so
-- "assigned" and "trimmed before" only ever move forward.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end

-- Decimal strings of any length, as stream ids carry them.
local function digits_less(a, b)
  a = string.match(a, '^0*(%d+)$')
  b = string.match(b, '^0*(%d+)$')
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then
    error('not an event id: ' .. id)
  end
  return ms, seq
end

local function id_less(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  if digits_less(a_ms, b_ms) then
    return true
  end
  if digits_less(b_ms, a_ms) then
    return false
  end
  return digits_less(a_seq, b_seq)
end

-- Every check (and every error) before the first write.
local assigned, trim = ARGV[2], ARGV[3]
if assigned ~= '' then
  local current = redis.call('HGET', KEYS[2], 'a')
  if current and not id_less(current, assigned) then
    assigned = ''
  end
end
local trimmed = ''
if trim ~= '' then
  local current = redis.call('HGET', KEYS[2], 't')
  parse(trim)
  if not current or id_less(current, trim) then
    trimmed = trim
  end
end

if assigned ~= '' then
  redis.call('HSET', KEYS[2], 'a', assigned)
end

local at = 6
local rooms = tonumber(ARGV[at])
for i = 1, rooms do
  local room, queue = ARGV[at + 2 * i - 1], ARGV[at + 2 * i]
  if queue == '' then
    redis.call('HDEL', KEYS[2], 'r:' .. room)
  else
    redis.call('HSET', KEYS[2], 'r:' .. room, queue)
  end
end
at = at + 2 * rooms + 1

for _, list in ipairs({{KEYS[3], ARGV[4]}, {KEYS[4], ARGV[5]}}) do
  local count = tonumber(ARGV[at])
  for i = 1, count do
    redis.call('LPUSH', list[1], ARGV[at + i])
  end
  if count > 0 then
    redis.call('LTRIM', list[1], 0, tonumber(list[2]) - 1)
  end
  at = at + count + 1
end

if trim ~= '' then
  redis.call('XTRIM', KEYS[5], 'MINID', trim)
end
if trimmed ~= '' then
  redis.call('HSET', KEYS[2], 't', trimmed)
end
return 1
