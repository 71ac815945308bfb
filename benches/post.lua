-- wrk script for benches/run.sh: POSTs a DigiLocker init and counts every non-200 answer.
-- BENCH_AUTHORIZATION (optional) is sent as Authorization: used only for the floor, where
-- wrk talks to the mock directly and must carry the token itself.

wrk.method = "POST"
wrk.body = '{"handshake_id":"bench-session-12345","callback_url":"https://app.example.com/dl/cb"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Caller-Id"] = "bench"
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization and authorization ~= "" then
    wrk.headers["Authorization"] = authorization
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non200 = 0
    first_bad = ""
end

function response(status, headers, body)
    if status ~= 200 then
        non200 = non200 + 1
        if first_bad == "" then
            first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 120)
        end
    end
end

function done(summary, latency, requests)
    local bad, sample = 0, ""
    for _, thread in ipairs(threads) do
        bad = bad + thread:get("non200")
        if sample == "" then sample = thread:get("first_bad") end
    end
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d non200=%d socket_errors=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, bad,
        e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(99)))
    if sample ~= "" then
        io.write("BENCH first_non200=" .. string.gsub(sample, "\n", " ") .. "\n")
    end
end
