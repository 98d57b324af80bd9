// cluster/scripts.cc: the Lua scripts (see scripts.h). Each runs atomically in Redis,
// which is what the fencing argument rests on: a check of the lease and the write it
// guards cannot be separated by another client's command.
#include "cluster/scripts.h"

namespace cluster {

// The log's end: the highest seq appended (the log-end key, "SEQ HASH", which the append
// script sets with each XADD) or covered by the newest checkpoint, whichever is higher,
// with the chain hash of that position. After a failover that lost the tail of the log,
// both roll back together: a replica holds a prefix of the master's writes.
#define LOG_END_FUNCTION                                                              \
  "local function log_end(log_end_key, checkpoints)\n"                               \
  "  local last, hash = 0, '0000000000000000'\n"                                      \
  "  local value = redis.call('GET', log_end_key)\n"                                  \
  "  if value then\n"                                                                 \
  "    local s, h = string.match(value, '^(%d+) (%x+)')\n"                            \
  "    if s then last, hash = tonumber(s), h end\n"                                   \
  "  end\n"                                                                           \
  "  local newest = redis.call('LINDEX', checkpoints, 0)\n"                           \
  "  if newest then\n"                                                                \
  "    local s = tonumber(string.match(newest, '^(%d+)'))\n"                          \
  "    if s > last then\n"                                                            \
  "      last = s\n"                                                                  \
  "      hash = string.match(newest, '^%d+ %d+ %d+ %d+ %d+ (%x+)') or ''\n"           \
  "    end\n"                                                                         \
  "  end\n"                                                                           \
  "  return last, hash\n"                                                             \
  "end\n"

// Membership, the same for both kinds of cluster: KEYS[1] the nodes zset, KEYS[2] their
// info hash; ARGV[1] this node, ARGV[2] its info, ARGV[3] its time to live (ms). Records
// it until Redis time + ttl and forgets the nodes whose time passed; leaves `now` (ms).
#define RECORD_MEMBER                                                                  \
  "local time = redis.call('TIME')\n" \
  "local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n" \
  "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])\n" \
  "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n" \
  "for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do\n" \
  "  redis.call('ZREM', KEYS[1], gone)\n" \
  "  redis.call('HDEL', KEYS[2], gone)\n" \
  "end\n"

// Members that may lead, from node-info ("ROLE APPLIED LAG_MS MAY_LEAD"): only they
// count when the acquire script looks for a node that applied more, so a follower-only
// node ahead of the others never keeps the lease free for ever. What a node applied past
// the log's end counts as the log's end: those entries were never acknowledged (a
// leader's ticks waiting for Redis, a tail a failover lost), and a paused or dead leader
// that holds them must not keep the others from taking over until its membership
// expires. With no log at all (Redis restarted empty) the node that holds most leads.
const char* const kAcquireScript =
    LOG_END_FUNCTION
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder then return {0, holder, redis.call('PTTL', KEYS[1])} end\n"
    "local time = redis.call('TIME')\n"
    "local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)\n"
    "local info = redis.call('HGETALL', KEYS[6])\n"
    "local last = log_end(KEYS[3], KEYS[4])\n"
    "for i = 1, #info, 2 do\n"
    "  local applied = tonumber(string.match(info[i + 1], '^%S+ (%d+)') or '0')\n"
    "  if last > 0 and applied > last then applied = last end\n"
    "  local may_lead = string.match(info[i + 1], '^%S+ %d+ %S+ (%d)') ~= '0'\n"
    "  local expiry = tonumber(redis.call('ZSCORE', KEYS[5], info[i]) or '0')\n"
    "  if info[i] ~= ARGV[1] and may_lead and expiry > now and applied > tonumber(ARGV[4]) then\n"
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
    "local last, hash = log_end(KEYS[3], KEYS[4])\n"
    "return {1, term, string.format('%d', last), hash}\n";

const char* const kRenewScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

// An entry already in the log with the same chain hash is success ("DUP"): a resend
// after a lost reply. Checked before the lease, since the entry is there whoever
// holds the lease now.
const char* const kAppendScript =
    LOG_END_FUNCTION
    "local seq = tonumber(ARGV[2])\n"
    "local last, last_hash = log_end(KEYS[3], KEYS[4])\n"
    "if last >= seq then\n"
    "  local held = nil\n"
    "  if last == seq then held = last_hash else\n"
    "    local found = redis.call('XRANGE', KEYS[2], ARGV[2] .. '-0', ARGV[2] .. '-0')\n"
    "    if #found == 1 then\n"
    "      local fields = found[1][2]\n"
    "      for i = 1, #fields, 2 do if fields[i] == 'h' then held = fields[i + 1] end end\n"
    "    end\n"
    "  end\n"
    "  if held == ARGV[7] then return 'DUP' end\n"
    "end\n"
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "if last >= seq then\n"
    "  return redis.error_reply(string.format('FENCED the log already ends at %d', last))\n"
    "end\n"
    "if last ~= seq - 1 then\n"
    "  return redis.error_reply(string.format('GAP the log ends at %d %s', last, last_hash))\n"
    "end\n"
    "if last_hash ~= ARGV[6] then\n"
    "  return redis.error_reply(string.format('DIVERGED the log ends at %d %s', last, last_hash))\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[2] .. ' ' .. ARGV[7])\n"
    "return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], ARGV[2] .. '-0', 't', ARGV[3], 'h', ARGV[7],\n"
    "                  'p', ARGV[4], 'e', ARGV[5])\n";

// Stream fields: s (source), g (epoch), k (tick), p (publish, Unix ms), q (the chain hash
// of the entry before), h (this entry's), e (the entry).
const char* const kPartitionAppendScript =
    LOG_END_FUNCTION
    "local epoch, tick = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local newest = redis.call('HGET', KEYS[4], ARGV[1])\n"
    "if newest then\n"
    "  local e, t, s, f = string.match(newest, '^(%d+) (%d+) (%d+) (%d+)')\n"
    "  e, t, f = tonumber(e), tonumber(t), tonumber(f)\n"
    "  if e == epoch and t == tick then return {'DUP', s} end\n"
    "  if epoch < f then\n"
    "    return redis.error_reply(string.format('STALE source %s is appended by epoch %d', ARGV[1], f))\n"
    "  end\n"
    "  if tick <= t then\n"
    "    if epoch > f then redis.call('HSET', KEYS[4], ARGV[1], string.format('%d %d %s %d', e, t, s, epoch)) end\n"
    "    return redis.error_reply(string.format('OLD source %s has tick %d', ARGV[1], t))\n"
    "  end\n"
    "end\n"
    "local last, last_hash = log_end(KEYS[2], KEYS[3])\n"
    "if last == 0 and ARGV[7] == '1' then\n"
    "  return redis.error_reply('EMPTY the log is gone (Redis lost it): its primary writes a checkpoint first')\n"
    "end\n"
    "local seq = string.format('%d', last + 1)\n"
    "local hash = string.sub(redis.sha1hex(last_hash .. ARGV[5]), 1, 16)\n"
    "redis.call('SET', KEYS[2], seq .. ' ' .. hash)\n"
    "redis.call('HSET', KEYS[4], ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. seq .. ' ' .. ARGV[2])\n"
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], seq .. '-0', 's', ARGV[1], 'g', ARGV[2], 'k', ARGV[3],\n"
    "           'p', ARGV[4], 'q', last_hash, 'h', hash, 'e', ARGV[5])\n"
    "return {'OK', seq, hash}\n";

const char* const kPartitioningScript =
    "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n"
    "return redis.call('GET', KEYS[1])\n";

const char* const kMembersScript =
    RECORD_MEMBER
    "local result = {string.format('%d', now)}\n"
    "for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do result[#result + 1] = v end\n"
    "return result\n";

const char* const kPartitionLeaseScript =
    LOG_END_FUNCTION
    "local last = string.format('%d', log_end(KEYS[3], KEYS[4]))\n"
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder and holder == ARGV[3] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return {1, tonumber(string.match(holder, ' (%d+)$')), last}\n"
    "end\n"
    "if holder then return {0, holder, last} end\n"
    "local term = redis.call('INCR', KEYS[2])\n"
    "redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. term, 'PX', ARGV[2])\n"
    "return {1, term, last}\n";

const char* const kEpochScript =
    "local epoch = redis.call('INCR', KEYS[1])\n"
    "if epoch <= tonumber(ARGV[1]) then\n"
    "  epoch = tonumber(ARGV[1]) + 1\n"
    "  redis.call('SET', KEYS[1], epoch)\n"
    "end\n"
    "return epoch\n";

// Every chunk is checked before any is made permanent: a checkpoint is recorded whole
// or not at all, and a missing chunk leaves the others to expire.
const char* const kCommitCheckpointScript =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
    "  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])\n"
    "end\n"
    "for i = 0, tonumber(ARGV[4]) - 1 do\n"
    "  if redis.call('EXISTS', ARGV[5] .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. i) == 0 then\n"
    "    return redis.error_reply('a chunk of checkpoint ' .. ARGV[2] .. ' expired before it was recorded')\n"
    "  end\n"
    "end\n"
    "for i = 0, tonumber(ARGV[4]) - 1 do\n"
    "  redis.call('PERSIST', ARGV[5] .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. i)\n"
    "end\n"
    "redis.call('LPUSH', KEYS[2], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[6] .. ' ' .. ARGV[7] .. ' ' .. ARGV[8])\n"
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
    RECORD_MEMBER
    "local term = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "if term < tonumber(ARGV[4]) then redis.call('SET', KEYS[3], ARGV[4]) end\n"
    "local result = {redis.call('GET', KEYS[4]) or '', redis.call('PTTL', KEYS[4]),\n"
    "                string.format('%d', log_end(KEYS[5], KEYS[6])), redis.call('LINDEX', KEYS[6], 0) or '',\n"
    "                string.format('%d', now)}\n"
    "for _, v in ipairs(redis.call('HGETALL', KEYS[2])) do result[#result + 1] = v end\n"
    "return result\n";

}  // namespace cluster
