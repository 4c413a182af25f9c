-- wrk script for meter event ingest (bench/ingest.py). Arguments after `--`:
--   mode      "v2": POST /v2/billing/meter_event_stream, a JSON body of `batch` events;
--             "v1": POST /v1/billing/meter_events, one form-encoded event
--   nonce     unique per wrk run
--   customers a file of customer ids, one per line
--   batch     events per v2 request (default 100)
-- Every event gets its own identifier (nonce, wrk thread id, request counter, position), a
-- customer drawn from the file, a model drawn from 4 values and a value from 1 to 1000; v2
-- events carry the current second as their RFC 3339 timestamp, v1 events none (the server's
-- clock). Authorization (a session token for v2, the secret key for v1) comes from wrk's -H.
-- done() prints one BENCH_RESULT line with wrk's counters plus this script's own: requests
-- started (`sent`), 2xx responses (`ok`) and other responses (`failed`); and one BENCH_SAMPLE
-- line per thread that saw a failure, with its first status and body.

local threads = {}
local next_thread_id = 0

function setup(thread)
  next_thread_id = next_thread_id + 1
  thread:set("thread_id", next_thread_id)
  table.insert(threads, thread)
end

-- Globals, so that done() can read them with thread:get().
sent = 0
ok = 0
failed = 0
sample = ""

local customers = {}
local models = { "gpt-4", "gpt-4o-mini", "claude-sonnet", "llama-70b" }
local mode = "v2"
local nonce = "x"
local batch = 100

function init(args)
  mode = args[1] or "v2"
  nonce = args[2] or tostring(os.time())
  for line in io.lines(args[3]) do
    if line ~= "" then
      customers[#customers + 1] = line
    end
  end
  batch = tonumber(args[4] or "100")
  math.randomseed(os.time() + (thread_id or 0) * 7919)
  wrk.method = "POST"
  if mode == "v2" then
    wrk.headers["Content-Type"] = "application/json"
  else
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
end

local function stream_body()
  local ts = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local prefix = nonce .. "-" .. (thread_id or 0) .. "-" .. sent .. "-"
  local n = #customers
  local parts = {}
  for i = 1, batch do
    parts[i] = '{"event_name":"tokens","payload":{"stripe_customer_id":"'
      .. customers[math.random(n)]
      .. '","value":"' .. math.random(1000)
      .. '","model":"' .. models[math.random(4)]
      .. '"},"identifier":"' .. prefix .. i
      .. '","timestamp":"' .. ts .. '"}'
  end
  return '{"events":[' .. table.concat(parts, ",") .. "]}"
end

local function form_body()
  -- Brackets percent-encoded, as the Stripe SDKs send them.
  return "event_name=tokens"
    .. "&payload%5Bstripe_customer_id%5D=" .. customers[math.random(#customers)]
    .. "&payload%5Bvalue%5D=" .. math.random(1000)
    .. "&payload%5Bmodel%5D=" .. models[math.random(4)]
    .. "&identifier=" .. nonce .. "-" .. (thread_id or 0) .. "-" .. sent
end

function request()
  sent = sent + 1
  local body
  if mode == "v2" then
    body = stream_body()
  else
    body = form_body()
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    failed = failed + 1
    if sample == "" then
      sample = status .. " " .. string.gsub(string.sub(body or "", 1, 400), "%s+", " ")
    end
  end
end

function done(summary, latency, requests)
  local total_sent, total_ok, total_failed = 0, 0, 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    total_ok = total_ok + t:get("ok")
    total_failed = total_failed + t:get("failed")
    local s = t:get("sample")
    if s ~= nil and s ~= "" then
      io.write("BENCH_SAMPLE " .. s .. "\n")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f,' ..
    '"sent":%.0f,"ok":%.0f,"failed":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), total_sent, total_ok, total_failed))
end
