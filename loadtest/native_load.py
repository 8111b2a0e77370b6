"""`make load NATIVE=1` and `make load-headless NATIVE=1`: Locust against the native stack.

Starts what the tests start (nativestack: the real Collector, Jaeger, the Tempo stand-in, the
Loki stand-in, Prometheus and app-a/b/c, each on its own loopback port), prints where they
listen, runs Locust with the given options against app-a (app-b/app-c by URL) until Locust
exits or Ctrl-C, then stops every process it started, by PID.

    services/.venv/bin/python loadtest/native_load.py [locust options...]
"""

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from nativestack.apps import locust_command
from nativestack.processes import stop_everything_on_sigterm
from nativestack.stack import start_stack


def stop_locust(locust: subprocess.Popen[bytes]) -> int:
    """SIGINT first (Locust then stops its users, prints its summary and writes its reports)."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if locust.poll() is not None:
            break
        locust.send_signal(sig)
        try:
            locust.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return locust.wait()


def main() -> int:
    stop_everything_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="native-load-") as workdir:
        print("starting the native stack (Collector, Jaeger x2, Loki stand-in, Prometheus, app-a/b/c)...", flush=True)
        stack = start_stack(Path(workdir))
        locust: subprocess.Popen[bytes] | None = None
        try:
            apps = stack.apps
            print(
                f"  app-a {apps['app-a'].url}  app-b {apps['app-b'].url}  app-c {apps['app-c'].url}\n"
                f"  Jaeger API {stack.jaeger.api_url}/api/services  Tempo stand-in {stack.tempo.api_url}\n"
                f"  Prometheus {stack.prometheus.url}  Collector metrics {stack.collector.metrics_url}\n"
                f"  process logs in {workdir} (removed at the end)",
                flush=True,
            )
            argv = locust_command(apps, *sys.argv[1:])
            # Own session: Ctrl-C reaches this script only, which then stops Locust cleanly.
            locust = subprocess.Popen(argv, start_new_session=True)
            return locust.wait()
        except KeyboardInterrupt:
            print("\nstopping Locust and the native stack...", flush=True)
            return stop_locust(locust) if locust else 130
        finally:
            if locust and locust.poll() is None:
                stop_locust(locust)
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
