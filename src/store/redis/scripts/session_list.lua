-- One page of sessions from an account-slot sorted set, newest start first.
--
-- KEYS[1] the listing zset: P{U}:sessions, P{U}:sessions:ongoing,
--         P{U}:sessions:ended, or P{U}:rsessions:<roomId>
-- ARGV[1] offset, ARGV[2] limit (> 0)
-- ARGV[3] "" or "o" / "e": keep only sessions in that state (used with a
--         room's zset, which holds both; costs a read per session of the room)
-- ARGV[4] the account's key prefix, P{U}: (session hashes live beside
--         KEYS[1] in the same slot)
--
-- Returns {total, {{sessionId, json, version}, ...}}; a listed session whose
-- hash is missing comes back with json false, for the caller to report.

local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local status, prefix = ARGV[3], ARGV[4]
local page = {}

local function entry(id)
  local fields = redis.call('HMGET', prefix .. 'session:' .. id, 'j', 'v')
  return {id, fields[1], fields[2]}
end

if status == '' then
  local total = redis.call('ZCARD', KEYS[1])
  local ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + limit - 1)
  for i, id in ipairs(ids) do
    page[i] = entry(id)
  end
  return {total, page}
end

local total = 0
for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  if redis.call('HGET', prefix .. 'session:' .. id, 'st') == status then
    if total >= offset and #page < limit then
      page[#page + 1] = entry(id)
    end
    total = total + 1
  end
end
return {total, page}
