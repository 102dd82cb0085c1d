-- wrk script for xtask/load/measure.sh.
-- POST /orders with a fresh key each time; the ids of created orders go to a file per thread.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  out = io.open(os.getenv("ORDO_LOAD_DIR") .. "/ids-" .. tid .. ".txt", "w")
end
function request()
  counter = counter + 1
  local i = counter % 32
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Idempotency-Key"] = "place-" .. tid .. "-" .. counter
  local body = '{"sku":"sku-' .. i .. '","quantity":1,"account":"acct-' .. i .. '","amount":10}'
  return wrk.format("POST", "/orders", nil, body)
end
function response(status, headers, body)
  local id = string.match(body, '"id":"([%x%-]+)"')
  if id then out:write(id .. "\n") out:flush() end
end
