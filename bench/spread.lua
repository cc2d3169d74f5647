-- Spreads requests over many workspaces: each line of $BENCH_REQUESTS is
-- "<workspace id>\t<base64 of id:key>\t<JSON body>", prepared by bench/run.py.
local requests = {}
local count = 0
local index = 0

function init(args)
  local path = os.getenv("BENCH_REQUESTS")
  for line in io.lines(path) do
    local wid, auth, body = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
    count = count + 1
    requests[count] = wrk.format("POST", "/v1/integrations/authentication", {
      ["Authorization"] = "Basic " .. auth,
      ["MOE-APPKEY"] = wid,
      ["Content-Type"] = "application/json",
    }, body)
  end
  -- Each run starts at a different place: LuaJIT's generator is not seeded by itself, so
  -- without this every run began at the same request, and the harness's cache warm-up (runs of
  -- 5 s until nearly every workspace is cached) could repeat the same slice for minutes.
  math.randomseed(os.time())
  index = math.random(count) - 1
end

function request()
  index = (index % count) + 1
  return requests[index]
end

