-- Prints wrk's summary as one line nacre-bench reads.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("NACRE-WRK %d %d %d %d %.1f %.1f\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
