"""The bench's Go load generators, built once into .cache/native/ by loadtest/build_go_tool.sh."""

import subprocess
from pathlib import Path

from .launch import LOADTEST


def binary(tool: str) -> Path:
    """`tool`'s binary (telemetrygen or vegeta), built from the Go module proxy when not cached."""
    script = LOADTEST / "build_go_tool.sh"
    result = subprocess.run([str(script), tool], capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"loadtest/build_go_tool.sh {tool} failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])
