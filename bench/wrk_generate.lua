-- wrk script for bench/served.py: POST /generate, a new seed each request, counting the
-- completion tokens each reply reports (usage.completion_tokens), not the ones it asked for.
--
--   wrk -t1 -c32 -d10s --timeout 30s -s bench/wrk_generate.lua http://127.0.0.1:8000 \
--       -- <mode> <max_tokens> <seed,seed,...> <prompt>
--
-- mode is "unary" (one JSON reply) or "stream" (Server-Sent Events; the last `data: {...}` before
-- `data: [DONE]` carries "usage"). Requests cycle through the given seeds (bench/served.py picks
-- ones whose replies run to max_tokens). done() prints one JSON line with the totals.

local threads = {}

-- runs in the main Lua state once per thread: number it, keep it for done()
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- the rest runs in each thread's own Lua state
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function init(args)
  stream = args[1] == "stream"
  local max_tokens = tonumber(args[2])
  seeds = {}
  for s in args[3]:gmatch("%d+") do table.insert(seeds, s) end
  local prompt = table.concat(args, " ", 4)
  -- everything but the seed, which request() appends
  body_head = string.format('{"prompt": %s, "max_tokens": %d, "temperature": 0.8, "stream": %s, "seed": ',
                            json_string(prompt), max_tokens, tostring(stream))
  turn = id * 7919             -- each thread starts elsewhere in the seed list
  tokens, replies, non200, incomplete = 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  turn = turn + 1
  return wrk.format(nil, "/generate", nil, body_head .. seeds[turn % #seeds + 1] .. "}")
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    return
  end
  -- 1. unary: {"usage": {"prompt_tokens": .., "completion_tokens": N}}
  -- 2. stream: the last completion_tokens of the body is the final event's, and [DONE] must follow
  local n
  for v in body:gmatch('"completion_tokens"%s*:%s*(%d+)') do n = tonumber(v) end
  if n == nil or (stream and not body:find("data: [DONE]", 1, true)) then
    incomplete = incomplete + 1          -- a 200 without usage: an `event: error` or a cut stream
    return
  end
  tokens = tokens + n
  replies = replies + 1
end

function done(summary, latency, requests)
  local t = {tokens = 0, replies = 0, non200 = 0, incomplete = 0}
  for _, thread in ipairs(threads) do
    for k in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    '{"duration_us": %d, "requests": %d, "tokens": %d, "replies": %d, "non200": %d, "incomplete": %d, '
    .. '"socket_errors": %d, "latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    summary.duration, summary.requests, t.tokens, t.replies, t.non200, t.incomplete,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
