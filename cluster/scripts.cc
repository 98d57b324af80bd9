// cluster/scripts.cc: the Lua scripts (see scripts.h). Each runs atomically in Redis,
// which is what the fencing argument rests on: a check of the lease and the write it
// guards cannot be separated by another client's command.
#include "cluster/scripts.h"

namespace cluster {

// The log's end: the highest seq appended (the log-end key, which the append script
// sets with each XADD) or covered by the newest checkpoint, whichever is higher. After
// a failover that lost the tail of the log, both roll back together: a replica holds a
// prefix of the master's writes.
#define LOG_END_FUNCTION                                                              \
  "local function log_end(log_end_key, checkpoints)\n"                               \
  "  local last = tonumber(redis.call('GET', log_end_key) or '0')\n"                 \
  "  local newest = redis.call('LINDEX', checkpoints, 0)\n"                          \
  "  if newest then\n"                                                               \
  "    local seq = tonumber(string.match(newest, '^(%d+)'))\n"                       \
  "    if seq > last then last = seq end\n"                                          \
  "  end\n"                                                                          \
  "  return last\n"                                                                  \
  "end\n"

const char* const kAcquireScript =
    LOG_END_FUNCTION
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder then return {0, holder, redis.call('PTTL', KEYS[1])} end\n"
    "local time = redis.call('TIME')\n"
    "local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n"
    "local info = redis.call('HGETALL', KEYS[6])\n"
    "for i = 1, #info, 2 do\n"
    "  local applied = tonumber(string.match(info[i + 1], '^%S+ (%d+)') or '0')\n"
    "  local expiry = tonumber(redis.call('ZSCORE', KEYS[5], info[i]) or '0')\n"
    "  if info[i] ~= ARGV[1] and expiry > now and applied > tonumber(ARGV[4]) then\n"
    "    return {0, '', 0}\n"
    "  end\n"
    "end\n"
    "local term = redis.call('INCR', KEYS[2])\n"
    "local floor = tonumber(ARGV[3])\n"
    "if term <= floor then\n"
    "  term = floor + 1\n"
    "  redis.call('SET', KEYS[2], term)\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. term, 'PX', ARGV[2])\n"
    "return {1, term, string.format('%d', log_end(KEYS[3], KEYS[4]))}\n";

const char* const kRenewScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

const char* const kAppendScript =
    LOG_END_FUNCTION
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "local seq = tonumber(ARGV[2])\n"
    "local last = log_end(KEYS[3], KEYS[4])\n"
    "if last >= seq then\n"
    "  return redis.error_reply(string.format('FENCED the log already ends at %d', last))\n"
    "end\n"
    "if last ~= seq - 1 then\n"
    "  return redis.error_reply(string.format('GAP the log ends at %d', last))\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[2])\n"
    "return redis.call('XADD', KEYS[2], ARGV[2] .. '-0', 't', ARGV[3], 'q', ARGV[6], 'p', ARGV[4], 'e', ARGV[5])\n";

const char* const kCommitCheckpointScript =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "for i = 0, tonumber(ARGV[4]) - 1 do\n"
    "  if redis.call('PERSIST', ARGV[5] .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. i) == 0 and\n"
    "     redis.call('EXISTS', ARGV[5] .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. i) == 0 then\n"
    "    return redis.error_reply('a chunk of checkpoint ' .. ARGV[2] .. ' expired before it was recorded')\n"
    "  end\n"
    "end\n"
    "redis.call('LPUSH', KEYS[2], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[6] .. ' ' .. ARGV[7])\n"
    "for _, old in ipairs(redis.call('LRANGE', KEYS[2], 2, -1)) do\n"
    "  local seq, term, chunks = string.match(old, '^(%d+) (%d+) (%d+)')\n"
    "  for i = 0, tonumber(chunks) - 1 do\n"
    "    redis.call('DEL', ARGV[5] .. seq .. ':' .. term .. ':' .. i)\n"
    "  end\n"
    "end\n"
    "redis.call('LTRIM', KEYS[2], 0, 1)\n"
    "local oldest = string.match(redis.call('LINDEX', KEYS[2], -1), '^(%d+)')\n"
    "if redis.call('EXISTS', KEYS[3]) == 1 then\n"
    "  redis.call('XTRIM', KEYS[3], 'MINID', oldest)\n"
    "end\n"
    "return 1\n";

const char* const kHeartbeatScript =
    LOG_END_FUNCTION
    "local time = redis.call('TIME')\n"
    "local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do\n"
    "  redis.call('ZREM', KEYS[1], gone)\n"
    "  redis.call('HDEL', KEYS[2], gone)\n"
    "end\n"
    "local term = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "if term < tonumber(ARGV[4]) then redis.call('SET', KEYS[3], ARGV[4]) end\n"
    "local result = {redis.call('GET', KEYS[4]) or '', redis.call('PTTL', KEYS[4]),\n"
    "                string.format('%d', log_end(KEYS[5], KEYS[6])), redis.call('LINDEX', KEYS[6], 0) or '',\n"
    "                string.format('%d', now)}\n"
    "for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do result[#result + 1] = v end\n"
    "return result\n";

}  // namespace cluster
