-- wrk: each request asks for a random member among the first BENCH_MEMBERS (m-0, m-1, ...).
local members = tonumber(os.getenv("BENCH_MEMBERS") or "20000")
request = function()
  return wrk.format("GET", "/v1/members/m-" .. math.random(0, members - 1))
end
