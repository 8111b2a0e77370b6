#!/usr/bin/env bash
# Builds one of `make bench`'s Go load generators into .cache/native/<tool>-<version>/
# (git-ignored) and reuses it while the version is unchanged. Only `make bench` runs this;
# `make test` never needs it. Prints the binary's path on its last line.
#
#   loadtest/build_go_tool.sh telemetrygen   spans for the pipeline-capacity phases
#   loadtest/build_go_tool.sh vegeta         constant-rate HTTP load for the open-loop phase
#
# The versions are pinned here, not in .env: these are load generators, not part of the stack.
# telemetrygen v0.161.0 is served by the Go module proxy; v0.158.0 (the Collector's release in
# .env) is not (its go.mod fails checksum-database verification: 404), so the generator is three
# releases ahead of the Collector. It only speaks OTLP, so the release gap does not matter.
set -euo pipefail

tool=${1:?usage: build_go_tool.sh telemetrygen|vegeta}
case "$tool" in
  telemetrygen)
    version=${TELEMETRYGEN_VERSION:-0.161.0}
    package="github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v$version" ;;
  vegeta)
    version=${VEGETA_VERSION:-12.13.0}
    package="github.com/tsenart/vegeta/v12@v$version" ;;
  *) echo "error: unknown tool '$tool' (telemetrygen or vegeta)" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${NATIVE_CACHE:-$root/.cache/native}
final="$cache/$tool-$version"

if [ -x "$final/$tool" ]; then
  echo "$final/$tool"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build $tool for \`make bench\`." >&2
  echo "       Install Go 1.26 or newer (https://go.dev/doc/install, or your package manager) and retry." >&2
  exit 1
fi
mkdir -p "$cache"
echo "building $tool v$version: a minute or two on a cold Go cache" >&2
tmp=$(mktemp -d "$cache/.tmp-$tool-XXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -trimpath "$package" >&2 ||
  { echo "error: could not build $tool v$version from the Go module proxy" >&2; exit 1; }
# Publish only a finished build: an interrupted one never looks cached.
mv "$tmp" "$final"
trap - EXIT
echo "$final/$tool"
