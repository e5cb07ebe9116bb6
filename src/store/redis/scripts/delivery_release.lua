-- Gives an account's delivery lease up, if the holder still has it.
--
-- KEYS[1] the lease, P{U}:dlease
-- ARGV[1] the holder
--
-- Returns 1 when released, 0 when someone else held it (or nobody).

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
