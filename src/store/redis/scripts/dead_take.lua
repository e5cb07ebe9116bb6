-- Removes and returns one dead letter of an event, for a replay.
--
-- KEYS[1] the dead letters, P{U}:dead (JSON records, newest first)
-- ARGV[1] the event id
--
-- Returns the newest record whose eventId is ARGV[1] (removed), or false.
-- A record that does not decode cannot match and stays.

for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and record.eventId == ARGV[1] then
    redis.call('LREM', KEYS[1], 1, raw)
    return raw
  end
end
return false
