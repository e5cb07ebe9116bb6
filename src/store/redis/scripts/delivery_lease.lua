-- Takes or renews an account's delivery lease.
--
-- KEYS[1] the lease, P{U}:dlease (the holder's name; expires)
-- ARGV[1] the holder
-- ARGV[2] the lease's lifetime, ms (> 0)
--
-- Returns 1 when the holder has the lease until now + ARGV[2], 0 when
-- another holder has it (nothing written).

local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
