-- The webhook signing key every replica shares: the first candidate stored
-- stays (SET NX), and whatever is stored is returned. (SET NX GET would do
-- it in one command, but only from Redis 7.0.)
--
-- KEYS[1] Pwebhook:signing-key
-- ARGV[1] the candidate PEM

redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
