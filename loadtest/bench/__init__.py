"""`make bench`: what the telemetry costs the apps, and what the Collector can carry.

One run, one machine, one native stack (nativestack: the real Collector, Jaeger, the Jaeger
standing in for Tempo, the Loki stand-in, Prometheus), in phases:

1. Overhead, closed loop (closed_loop.py): one trio of app-a/b/c per variant (launch.py), each
   launched like its container; wrk (wrk.py) drives app-a's `/` and `/chain` at a fixed
   concurrency in alternating rounds, variant order rotated each round; the figure per variant
   is the median over rounds, also given as a ratio to the uninstrumented app. Between runs the
   bench waits until every span has reached both trace backends, so no export backlog leaks into
   the next run, and it counts spans on the way (accounting.py): the apps' own request counters,
   the Collector's accepted/sent, both Jaegers' stored.
2. Latency at a given rate, open loop (open_loop.py): vegeta (vegeta.py) offers 25%, 50% and
   75% of the zero-code app's capacity on `/` and `/items/7` to the uninstrumented, zero-code and
   hand-instrumented app-a in turn, at a constant rate whatever the server does; p50/p99/p99.9
   from each request's scheduled send time (coordinated omission corrected), and what the
   telemetry adds to each; drawn by plot.py next to docs/benchmarks.md.
3. Optionally (--profile), py-spy samples app-a's worker under `/` load, per variant (profile.py).
4. Pipeline capacity (capacity.py): telemetrygen sends traces at increasing rates into the
   Collector (apps stopped); the highest rate with nothing refused or lost on the way to Jaeger
   and the Tempo stand-in, with the Collector's CPU and peak RSS; then the same through the
   two-tier topology (tier_capacity.py).

A phase is a module with `add_arguments(parser)`, a run function and a `markdown(section)` for
its part of the report (report.py assembles docs/benchmarks.json and the generated part of
docs/benchmarks.md, between the `bench:begin`/`bench:end` markers; the analysis around them is
kept). Needs `make native`, wrk, Go (telemetrygen and vegeta, built once by loadtest/build_go_tool.sh).
Every process it starts is stopped by PID, also on Ctrl-C.

    services/.venv/bin/python -m loadtest.bench --rounds 1 --duration 3 --variants uninstrumented,zero_code
"""
