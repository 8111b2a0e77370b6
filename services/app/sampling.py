"""Which traces the gateways' tail sampling is bound to keep, so the app's own exemplars at
/metrics point only at traces that will exist.

In the two-tier topology (`make up TOPOLOGY=gateway`) the gateways keep a trace when it has an
HTTP 5xx or an error, when it lasts at least TRACE_SAMPLING_SLOW_MS, or when its id falls in the
baseline share (collector/gateway.yaml, thresholds in collector/sampling.env). A request that
answered 5xx, or took that long itself, is in such a trace; so is every request whose trace id
passes the baseline rule, which this module evaluates exactly as the gateway's OTTL condition
does. Other traces may be dropped, so they get no exemplar. With the single Collector nothing is
dropped: the defaults (100%) keep every exemplar.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class TailSampling:
    baseline_percent: int  # whole percent of the remaining traces kept, by trace id
    slow_ms: int  # traces at least this long are kept

    def keeps_trace_id(self, trace_id: str) -> bool:
        """The baseline rule on a 32-hex-digit trace id: its last 16 bits (random in every W3C
        trace id) below baseline_percent% of 65536."""
        return int(trace_id[28:32], 16) * 100 < self.baseline_percent * 65536

    def keeps(self, trace_id: str, status_code: int, seconds: float) -> bool:
        """True when the trace of a request that ended so is surely kept."""
        return status_code >= 500 or seconds * 1000 >= self.slow_ms or self.keeps_trace_id(trace_id)


def load_tail_sampling() -> TailSampling:
    return TailSampling(
        baseline_percent=int(os.environ.get("TRACE_SAMPLING_BASELINE_PERCENT", "100")),
        slow_ms=int(os.environ.get("TRACE_SAMPLING_SLOW_MS", "500")),
    )
