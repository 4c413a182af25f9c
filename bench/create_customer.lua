-- wrk script for customers.create (and the bare handler's POST).
-- Every request carries its own Idempotency-Key, built from the run nonce
-- (first script argument, after `--`), the wrk thread id, a per-thread random
-- salt and a per-thread counter, so no two requests of any run share a key.
-- Authorization comes from wrk's -H option on the command line.

local next_thread_id = 0

function setup(thread)
  next_thread_id = next_thread_id + 1
  thread:set("thread_id", next_thread_id)
end

local counter = 0
local nonce = "x"
local salt = "0"

function init(args)
  nonce = args[1] or tostring(os.time())
  math.randomseed(os.time() + (thread_id or 0) * 7919)
  salt = string.format("%08x", math.random(0, 2147483646))
  wrk.method = "POST"
  wrk.body = "name=bench&email=bench%40example.com"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] =
    string.format("bench-%s-%d-%s-%d", nonce, thread_id or 0, salt, counter)
  return wrk.format()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%.0f,"duration_us":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
