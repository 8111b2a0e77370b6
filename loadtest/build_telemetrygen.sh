#!/usr/bin/env bash
# Builds contrib's telemetrygen, the span generator of `make bench`'s pipeline-capacity phase,
# into .cache/native/telemetrygen-<version>/ (git-ignored) and reuses it while the version is
# unchanged. Only `make bench` runs this; `make test` never needs it. Prints the binary's path
# on its last line.
#
# The version is pinned here, not in .env: telemetrygen is a load generator, not part of the
# stack. v0.161.0 is served by the Go module proxy; v0.158.0 (the Collector's release in .env)
# is not (its go.mod fails checksum-database verification: 404), so the generator is three
# releases ahead of the Collector. It only speaks OTLP, so the release gap does not matter.
set -euo pipefail

version=${TELEMETRYGEN_VERSION:-0.161.0}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${NATIVE_CACHE:-$root/.cache/native}
final="$cache/telemetrygen-$version"

if [ -x "$final/telemetrygen" ]; then
  echo "$final/telemetrygen"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build telemetrygen for \`make bench\`." >&2
  echo "       Install Go 1.26 or newer (https://go.dev/doc/install, or your package manager) and retry." >&2
  exit 1
fi
mkdir -p "$cache"
echo "building telemetrygen v$version: a minute or two on a cold Go cache" >&2
tmp=$(mktemp -d "$cache/.tmp-telemetrygen-XXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install -trimpath \
  "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v$version" >&2 ||
  { echo "error: could not build telemetrygen v$version from the Go module proxy" >&2; exit 1; }
# Publish only a finished build: an interrupted one never looks cached.
mv "$tmp" "$final"
trap - EXIT
echo "$final/telemetrygen"
