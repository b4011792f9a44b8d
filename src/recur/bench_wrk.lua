-- The wrk script of `recur bench api` (see bench_wrk.py), filled in for each run: thread i
-- sends KINDS[i] requests to HOSTS[i]:PORTS[i].
local KINDS = ${kinds}
local HOSTS = ${hosts}
local PORTS = ${ports}
local CUSTOMERS = ${customers}
local SUBSCRIPTIONS = ${subscriptions}
local AUTH = ${auth}
local ID_PREFIX = ${id_prefix}
local PAYMENT_AMOUNT = ${amount}
local CURRENCY = ${currency}
local DESCRIPTION = ${description}
local TIMEOUT = ${timeout}

local threads = {}

function setup(thread)
  local index = #threads + 1
  thread.addr = wrk.lookup(HOSTS[index], PORTS[index])[1]
  thread:set("tid", index)
  thread:set("kind", KINDS[index])
  threads[index] = thread
end

function init(args)
  sent, ok, failed, replayed, n = 0, 0, 0, 0, 0
  first_error = ""
  -- Requests sent and not answered yet, by request id, with the second they were sent: wrk
  -- counts a timeout only when the late answer comes, never for a request left unanswered.
  pending = {}
end

function request()
  n = n + 1
  -- Every request has its own id, sent as X-Request-Id (which the gateway and the services
  -- echo) and, on a POST, as its Idempotency-Key.
  local id = ID_PREFIX .. "-" .. tid .. "-" .. n
  -- wrk asks the first thread for one request to check it before the run, and never sends
  -- it: not counted, and its id is used by no request.
  if not (tid == 1 and n == 1) then
    sent = sent + 1
    pending[id] = os.time()
  end
  local pick = (tid * 7919 + n) % #CUSTOMERS + 1
  if kind == "customer" then
    return wrk.format("GET", "/v1/customers/" .. CUSTOMERS[pick],
      {["Authorization"] = AUTH, ["X-Request-Id"] = id})
  elseif kind == "subscription" then
    return wrk.format("GET", "/v1/subscriptions/" .. SUBSCRIPTIONS[pick],
      {["Authorization"] = AUTH, ["X-Request-Id"] = id})
  end
  local body = '{"customer_id":"' .. CUSTOMERS[pick] .. '","amount":' .. PAYMENT_AMOUNT
    .. ',"currency":"' .. CURRENCY .. '","description":"' .. DESCRIPTION .. '"}'
  return wrk.format("POST", "/v1/payments", {
    ["Authorization"] = AUTH,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = id,
    ["X-Request-Id"] = id,
  }, body)
end

function response(status, headers, body)
  local id = headers["x-request-id"] or headers["X-Request-Id"]
  if id then pending[id] = nil end
  if status >= 200 and status < 300 then
    ok = ok + 1
    if headers["idempotent-replayed"] or headers["Idempotent-Replayed"] then
      replayed = replayed + 1
    end
  else
    failed = failed + 1
    if first_error == "" then
      first_error = kind .. ": " .. status .. " " .. string.sub(body or "", 1, 400)
    end
  end
end

local function quote(value)
  local text = tostring(value or "")
  text = string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. text .. '"'
end

function done(summary, latency, requests)
  local now = os.time()
  local parts = {}
  for index, thread in ipairs(threads) do
    -- Unanswered for longer than the timeout (os.time counts whole seconds): stuck. The
    -- requests still in flight when wrk stopped are younger.
    local stuck, first_stuck = 0, ""
    for id, at in pairs(thread:get("pending")) do
      if now - at > TIMEOUT then
        stuck = stuck + 1
        first_stuck = id
      end
    end
    local first_error = thread:get("first_error")
    if first_error == "" and stuck > 0 then
      first_error = thread:get("kind") .. ": no answer in " .. TIMEOUT .. " s to request "
        .. first_stuck
    end
    parts[index] = string.format(
      '{"kind":%s,"sent":%d,"ok":%d,"failed":%d,"replayed":%d,"stuck":%d,'
        .. '"first_error":%s}',
      quote(thread:get("kind")), thread:get("sent"), thread:get("ok"), thread:get("failed"),
      thread:get("replayed"), stuck, quote(first_error))
  end
  local e = summary.errors
  io.write(string.format(
    '${mark}{"duration_us":%d,"requests":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"threads":[%s]}\n',
    summary.duration, summary.requests, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
