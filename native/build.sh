#!/usr/bin/env bash
# Builds the Apache-2.0 programs the end-to-end tests run (the Collector from our manifest, the
# Loki stand-in Collector, Jaeger v2, Prometheus and promtool, Alertmanager) at the versions in
# ../.env.
# Each lands in .cache/native/<name>-<key>/ and is reused while its key (version, plus the
# manifest's hash for Collectors) is unchanged. Prints nothing but progress; exits non-zero
# with a readable message on any failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${NATIVE_CACHE:-$root/.cache/native}
mkdir -p "$cache"

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is needed to build the test binaries (Collector, Jaeger, Prometheus)." >&2
  echo "       Install Go 1.26 or newer (https://go.dev/doc/install, or your package manager) and retry." >&2
  exit 1
fi

# Read KEY=VALUE from .env without executing it.
env_value() {
  local v
  v=$(sed -n "s/^$1=//p" "$root/.env" | tail -n 1)
  [ -n "$v" ] || { echo "error: $1 is missing from .env" >&2; exit 1; }
  printf '%s' "$v"
}

otelcol_version=$(env_value OTELCOL_VERSION)
jaeger_version=$(env_value JAEGER_VERSION)
prometheus_version=$(env_value PROMETHEUS_VERSION)

# Jaeger v2.N.P is tagged as Go module v1.(N+63).P; Prometheus 3.M.P as v0.3MM.P.
IFS=. read -r _ j_minor j_patch <<<"$jaeger_version"
jaeger_module_version="v1.$((j_minor + 63)).$j_patch"
IFS=. read -r _ p_minor p_patch <<<"$prometheus_version"
prometheus_module_version=$(printf 'v0.3%02d.%s' "$p_minor" "$p_patch")

# Download a module's source and print its (read-only) directory in the module cache.
module_dir() {
  local dir
  dir=$(cd "$cache" && go mod download -json "$1@$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "error: could not download $1@$2 from the Go module proxy" >&2; exit 1; }
  printf '%s' "$dir"
}

# build_once NAME KEY COMMAND...: runs COMMAND with $out pointing at a fresh directory, then
# publishes it as $cache/NAME-KEY, so an interrupted build never looks like a finished one.
build_once() {
  local name=$1 key=$2; shift 2
  local final="$cache/$name-$key"
  if [ -d "$final" ]; then echo "cached: $final"; return; fi
  echo "building $name ($key): this takes minutes on a cold cache"
  out=$(mktemp -d "$cache/.tmp-$name-XXXX")
  "$@"
  mv "$out" "$final"
  echo "built: $final"
}

build_collector() {  # MANIFEST
  local builder_bin="$cache/builder-$otelcol_version"
  if [ ! -x "$builder_bin/builder" ]; then
    GOBIN="$builder_bin" go install "go.opentelemetry.io/collector/cmd/builder@v$otelcol_version"
  fi
  local work; work=$(mktemp -d); mkdir -p "$work/build"
  (cd "$work" && "$builder_bin/builder" --config="$1" >"$out/builder.log" 2>&1) ||
    { tail -n 40 "$out/builder.log" >&2; echo "error: the Collector build failed ($1)" >&2; exit 1; }
  mv "$work"/build/*/otelcol-* "$out/otelcol"
  rm -rf "$work"
}

build_jaeger() {
  local src; src=$(module_dir github.com/jaegertracing/jaeger "$jaeger_module_version")
  (cd "$src" && go build -trimpath -o "$out/jaeger" ./cmd/jaeger)
}

build_prometheus() {
  local src; src=$(module_dir github.com/prometheus/prometheus "$prometheus_module_version")
  # GOWORK=off: the module zip ships a go.work naming folders it lacks.
  # remove_all_sd: the tests only use static targets; it cuts the build by half.
  local flags=(-trimpath -tags remove_all_sd -ldflags "-X github.com/prometheus/common/version.Version=$prometheus_version")
  (cd "$src" && export GOWORK=off && go build "${flags[@]}" -o "$out/prometheus" ./cmd/prometheus &&
    go build "${flags[@]}" -o "$out/promtool" ./cmd/promtool)
}

build_alertmanager() {
  local version; version=$(env_value ALERTMANAGER_VERSION)
  local src; src=$(module_dir github.com/prometheus/alertmanager "v$version")
  # The module zip lacks the web UI's compiled assets (ui/app/dist, built with npm upstream),
  # which ui/web.go embeds: build a copy of the source with a placeholder page there. The API
  # that Prometheus, Grafana and the tests use is complete.
  local work; work=$(mktemp -d)
  cp -r "$src/." "$work" && chmod -R u+w "$work"
  for ui in elm mantine; do
    mkdir -p "$work/ui/app/dist/$ui"
    echo "Alertmanager built without its web UI: use the API (/api/v2/alerts)." >"$work/ui/app/dist/$ui/index.html"
  done
  (cd "$work" && go build -trimpath -ldflags "-X github.com/prometheus/common/version.Version=$version" \
    -o "$out/alertmanager" ./cmd/alertmanager)
  rm -rf "$work"
}

manifest_key() { printf '%s-%s' "$otelcol_version" "$(sha256sum "$1" | cut -c1-12)"; }

collector_key=$(manifest_key "$root/collector/manifest.yaml")
standin_key=$(manifest_key "$root/native/standins/loki-standin-manifest.yaml")
build_once otelcol "$collector_key" build_collector "$root/collector/manifest.yaml"
build_once loki-standin "$standin_key" build_collector "$root/native/standins/loki-standin-manifest.yaml"
build_once jaeger "$jaeger_version" build_jaeger
build_once prometheus "$prometheus_version" build_prometheus
build_once alertmanager "$(env_value ALERTMANAGER_VERSION)" build_alertmanager

# nativestack (native/nativestack/paths.py) reads the binaries' paths from here rather than re-deriving the keys.
cat >"$cache/binaries.env" <<PATHS
OTELCOL=$cache/otelcol-$collector_key/otelcol
LOKI_STANDIN=$cache/loki-standin-$standin_key/otelcol
JAEGER=$cache/jaeger-$jaeger_version/jaeger
PROMETHEUS=$cache/prometheus-$prometheus_version/prometheus
PROMTOOL=$cache/prometheus-$prometheus_version/promtool
ALERTMANAGER=$cache/alertmanager-$(env_value ALERTMANAGER_VERSION)/alertmanager
PATHS
