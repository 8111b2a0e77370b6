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
2. Optionally (--profile), py-spy samples app-a's worker under `/` load, per variant (profile.py).
3. Pipeline capacity (capacity.py): telemetrygen sends traces at increasing rates into the
   Collector (apps stopped); the highest rate with nothing refused or lost on the way to Jaeger
   and the Tempo stand-in, with the Collector's CPU and peak RSS.

A phase is a module with `add_arguments(parser)`, a run function and a `markdown(section)` for
its part of the report (report.py assembles docs/benchmarks.json and the generated part of
docs/benchmarks.md, between the `bench:begin`/`bench:end` markers; the analysis around them is
kept). Needs `make native`, wrk, Go (telemetrygen, built once by loadtest/build_telemetrygen.sh).
Every process it starts is stopped by PID, also on Ctrl-C.

    services/.venv/bin/python -m loadtest.bench --rounds 1 --duration 3 --variants uninstrumented,zero_code
"""
