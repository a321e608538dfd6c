//! The rooms' Lua scripts. Each runs on the keys of one room, which share a
//! hash slot (`room:{<room>}:...`), so each is one atomic step on one node
//! in every mode, and the publish inside it keeps pub/sub order equal to id
//! order.

use redis::Script;

/// Publish: next id, history append, fan-out, in one step.
///
/// KEYS: meta (hash epoch/seq/replid), history (stream), channel, origins
/// (zset: recent publish ids scored by message id).
/// ARGV: body (the JSON object's tail after `{`), floor, candidate epoch,
/// history size, history TTL ms, meta TTL ms, jump, publish command, now ms,
/// origin (the publish's unique id), new-epoch flag, expected replication
/// id ('' = any). Returns {id, epoch, replication id, offset, acked}, or
/// {-1, '', replication id, offset, acked} when the master is not the
/// expected one (nothing written: the caller first publishes again what the
/// old master took). `offset` is the master's replication offset before
/// this script's writes, `acked` the highest offset a replica acknowledged
/// (-1 without replicas): see `rooms::acked`.
///
/// Idempotent: a retry of a publish that already ran (the connection
/// dropped before the reply) answers the first run's id and publishes
/// nothing. Origins are kept for as many messages as history.
///
/// A new epoch starts, above every id handed out before, when the master
/// changed since the room's last publish (`master_replid` differs: a
/// failover may have lost the tail of the sequence, and the same id must
/// never name two messages) or when the publisher has seen ids beyond the
/// counter (a regression, or local ids given out during an outage), or
/// when asked to (the first message an instance sends after an outage).
/// The jump leaves room for the ids any instance gave out locally.
const PUBLISH: &str = r#"
local info = redis.call('INFO', 'replication')
local replid = string.match(info, 'master_replid:(%w+)') or ''
local offset = tonumber(string.match(info, 'master_repl_offset:(%d+)') or '0')
local acked = -1
for off in string.gmatch(info, 'slave%d+:[^\r\n]-offset=(%d+)') do
  acked = math.max(acked, tonumber(off))
end
local done = redis.call('ZSCORE', KEYS[4], ARGV[10])
if done then
  return {tonumber(done), redis.call('HGET', KEYS[1], 'epoch') or '', replid, offset, acked}
end
if ARGV[12] ~= '' and ARGV[12] ~= replid then
  return {-1, '', replid, offset, acked}
end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'replid')
local floor = tonumber(ARGV[2])
local jump = tonumber(ARGV[7])
local epoch = m[1]
local seq = tonumber(m[2] or '0') or 0
if not epoch then
  epoch = ARGV[3]
  if floor > 0 then seq = floor + jump else seq = 0 end
elseif m[3] ~= replid or seq < floor or ARGV[11] == '1' then
  epoch = ARGV[3]
  seq = math.max(seq, floor) + jump
end
seq = seq + 1
redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', seq, 'replid', replid)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local payload = '{"e":"' .. epoch .. '","i":' .. string.format('%d', seq) .. ',"t":' .. ARGV[9] .. ',' .. ARGV[1]
local id = string.format('%d', seq) .. '-1'
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[4], id, 'p', payload)
if type(added) == 'table' and added.err then
  -- The stream outlived its counter (evicted meta): start it again.
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], id, 'p', payload)
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[4], seq, ARGV[10])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[4]) - 1)
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call(ARGV[8], KEYS[3], payload)
return {seq, epoch, replid, offset, acked}
"#;

/// Source: the room's master's replication id, offset and the highest
/// offset a replica acknowledged (KEYS: meta, for the slot).
const SOURCE: &str = r#"
local info = redis.call('INFO', 'replication')
local acked = -1
for off in string.gmatch(info, 'slave%d+:[^\r\n]-offset=(%d+)') do
  acked = math.max(acked, tonumber(off))
end
return {string.match(info, 'master_replid:(%w+)') or '',
  tonumber(string.match(info, 'master_repl_offset:(%d+)') or '0'), acked}
"#;

/// Position: the room's epoch and last id, creating the epoch if missing.
/// KEYS: meta. ARGV: candidate epoch, meta TTL ms.
const POSITION: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not m[1] then
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%w+)') or ''
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0, 'replid', replid)
  m = {ARGV[1], '0'}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {m[1], tonumber(m[2] or '0') or 0}
"#;

/// Presence is three keys: `presence` (field `<member>\n<server>` -> this
/// instance's connections of the member), `expiry` (zset, same fields,
/// scored by the time the entry lapses) and `members` (member -> how many
/// instances list it), so join/leave know in O(1) whether a member is new
/// or gone everywhere.
///
/// Join or update. KEYS: presence, expiry, members. ARGV: field, member,
/// connections, expires at ms, key TTL ms. Returns 1 when the member is new.
const PRESENCE_JOIN: &str = r#"
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local first = 0
if had == 0 and redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then first = 1 end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return first
"#;

/// Leave. KEYS: presence, expiry, members. ARGV: field, member.
/// Returns 1 when the member is now on no instance.
const PRESENCE_LEAVE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[2])
    return 1
  end
end
return 0
"#;

/// Refresh this instance's entries, purge lapsed ones (any instance).
/// KEYS: presence, expiry, members, meta. ARGV: now ms, expires at ms, key
/// TTL ms, meta TTL ms, then (field, member, connections) triples.
/// Returns {members that appeared, members that vanished, every member
/// present on any instance}.
const PRESENCE_SYNC: &str = r#"
local joined, left = {}, {}
for i = 5, #ARGV, 3 do
  local f, m = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[1], f) == 0 and redis.call('HINCRBY', KEYS[3], m, 1) == 1 then
    table.insert(joined, m)
  end
  redis.call('HSET', KEYS[1], f, ARGV[i + 2])
  redis.call('ZADD', KEYS[2], ARGV[2], f)
end
for _, f in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  redis.call('ZREM', KEYS[2], f)
  if redis.call('HDEL', KEYS[1], f) == 1 then
    local m = string.match(f, '^(.*)\n')
    if m and redis.call('HINCRBY', KEYS[3], m, -1) <= 0 then
      redis.call('HDEL', KEYS[3], m)
      table.insert(left, m)
    end
  end
end
if #ARGV >= 5 then
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
return {joined, left, redis.call('HKEYS', KEYS[3])}
"#;

/// Members: live entries only (lapsed ones are left for the purge, which
/// announces them). KEYS: presence, expiry. ARGV: now ms.
/// Returns a flat list of field, connections.
const MEMBERS: &str = r#"
local out = {}
for _, f in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')) do
  local c = redis.call('HGET', KEYS[1], f)
  if c then
    table.insert(out, f)
    table.insert(out, c)
  end
end
return out
"#;

/// The scripts, hashed once.
pub struct Scripts {
    pub publish: Script,
    pub position: Script,
    pub presence_join: Script,
    pub presence_leave: Script,
    pub presence_sync: Script,
    pub members: Script,
    pub source: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            publish: Script::new(PUBLISH),
            position: Script::new(POSITION),
            presence_join: Script::new(PRESENCE_JOIN),
            presence_leave: Script::new(PRESENCE_LEAVE),
            presence_sync: Script::new(PRESENCE_SYNC),
            members: Script::new(MEMBERS),
            source: Script::new(SOURCE),
        }
    }
}
