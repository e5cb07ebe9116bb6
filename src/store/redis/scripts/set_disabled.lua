-- Sets or clears a room's disabled flag. updated-at moves only when the flag
-- changes, and never backwards (replicas' clocks differ).
--
-- KEYS[1] the room hash, P{U}:room:<roomId>
-- ARGV[1] "1" to disable, "0" to enable
-- ARGV[2] now, unix ms
--
-- Returns the room hash's {field, value, ...} after the change, or false when
-- the room does not exist (nothing is written then).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end

local want = ARGV[1] == '1'
local is = redis.call('HEXISTS', KEYS[1], 'd') == 1
if want ~= is then
  -- Compared as numbers, written back as the original strings: Lua's
  -- tostring would turn large numbers into exponent notation.
  local previous = redis.call('HGET', KEYS[1], 'u') or redis.call('HGET', KEYS[1], 't')
  local updated = ARGV[2]
  if previous and tonumber(previous) and tonumber(previous) > tonumber(updated) then
    updated = previous
  end
  if want then
    redis.call('HSET', KEYS[1], 'd', '1', 'u', updated)
  else
    redis.call('HDEL', KEYS[1], 'd')
    redis.call('HSET', KEYS[1], 'u', updated)
  end
end

return redis.call('HGETALL', KEYS[1])
