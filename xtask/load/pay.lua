-- wrk script for xtask/load/measure.sh.
-- POST /orders/{id}/pay, one per created order, key "pay-<id>": fresh the first time,
-- replays when run again over the same ids.
local ids = {}
local pos = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
-- An optional argument caps how many ids each thread cycles over (to replay only paid ones).
function init(args)
  local cap = tonumber(args[1]) or math.huge
  for line in io.lines(os.getenv("ORDO_LOAD_DIR") .. "/ids-" .. tid .. ".txt") do
    if #ids < cap then table.insert(ids, line) end
  end
end
function request()
  pos = pos + 1
  if pos > #ids then pos = 1 end
  local id = ids[pos]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Idempotency-Key"] = "pay-" .. id
  return wrk.format("POST", "/orders/" .. id .. "/pay", nil, "{}")
end
statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
