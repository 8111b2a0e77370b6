#!/usr/bin/env bash
# Builds the Apache-2.0 programs the tests run at the versions in ../.env: the Collector from our
# manifest, the Loki stand-in Collector, Jaeger v2, Prometheus and promtool, Alertmanager,
# kube-apiserver, kubectl, etcd and kubeconform (Go modules), composecheck (native/composecheck,
# the compose file loader the compose tests use), and fetches Cassandra's server jars with Maven.
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
cassandra_version=$(env_value CASSANDRA_VERSION)

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

# kube-apiserver and kubectl (the tests' API server, and the client whose built-in kustomize
# renders k8s/): one module at one version, so client and server never skew and CI needs only
# the Go proxy. k8s.io/kubernetes points its k8s.io/* staging modules at ./staging/..., which
# its module zip lacks, so a scratch main module requires them at the matching v0.MINOR.PATCH
# instead (only the main module's replace lines count). The version is stamped in, or kubectl
# cannot parse the server's.
build_kubernetes() {
  local version; version=$(env_value KUBERNETES_VERSION)
  local src; src=$(module_dir k8s.io/kubernetes "v$version")
  local work; work=$(mktemp -d)
  {
    printf 'module kubernetes-build\n\ngo 1.26.0\n\n'
    sed -n "s#^\t\(k8s.io/[a-z-]*\) => ./staging/.*#replace \1 => \1 v0.${version#*.}#p" "$src/go.mod"
  } >"$work/go.mod"
  local stamp="-X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=${version%%.*}"
  stamp+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$version") -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$work" && export CGO_ENABLED=0 &&
    go get "k8s.io/kubernetes/cmd/kube-apiserver@v$version" "k8s.io/kubernetes/cmd/kubectl@v$version" &&
    go build -trimpath -ldflags "-s -w $stamp" -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl) ||
    { echo "error: the kube-apiserver/kubectl build failed (k8s.io/kubernetes v$version)" >&2; exit 1; }
  rm -rf "$work"
}

# etcd for the tests' API server: its module has replace lines for its sibling modules, so it is
# built from a scratch main module that requires it (the siblings then resolve at their tags).
build_etcd() {
  local version; version=$(env_value ETCD_VERSION)
  local work; work=$(mktemp -d)
  printf 'module etcd-build\n\ngo 1.26.0\n' >"$work/go.mod"
  (cd "$work" && export CGO_ENABLED=0 && go get "go.etcd.io/etcd/server/v3@v$version" &&
    go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) ||
    { echo "error: the etcd build failed (go.etcd.io/etcd/server/v3 v$version)" >&2; exit 1; }
  rm -rf "$work"
}

# kubeconform: the static schema check of the rendered manifests (offline schemas: tests/k8s).
build_kubeconform() {
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath "github.com/yannh/kubeconform/cmd/kubeconform@v$(env_value KUBECONFORM_VERSION)"
}

# composecheck: compose-go, the library `docker compose` loads files with, behind a small CLI
# (native/composecheck/main.go). Keyed on compose-go's version in its go.mod plus a hash of the
# module's files, so an edit rebuilds it.
composecheck_key() {
  local dir="$root/native/composecheck" version
  version=$(sed -n 's#^require github.com/compose-spec/compose-go/v2 v##p' "$dir/go.mod")
  printf '%s-%s' "$version" "$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" | sha256sum | cut -c1-12)"
}
build_composecheck() {
  (cd "$root/native/composecheck" && go build -trimpath -buildvcs=false -o "$out/composecheck" .)
}

# Cassandra's server jars (cassandra-all and its runtime dependencies, as native/cassandra/pom.xml
# declares them) from Maven Central into $out/lib, and $out/java: the Java 17 the tests run them
# on (Cassandra 5.0 runs on 11 or 17; native/cassandra/jvm17-server.options holds 17's flags).
build_cassandra() {
  local java=${JAVA_HOME:+$JAVA_HOME/bin/}java major
  major=$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' || true)
  if [ "$major" != 17 ]; then
    echo "error: Cassandra needs Java 17 (found '${major:-no java}' at $java)." >&2
    echo "       Install OpenJDK 17 (e.g. apt-get install openjdk-17-jre-headless) or point JAVA_HOME at one." >&2
    exit 1
  fi
  command -v mvn >/dev/null 2>&1 ||
    { echo "error: Maven (mvn) is needed to fetch Cassandra: apt-get install maven, or https://maven.apache.org/install.html" >&2; exit 1; }
  # Downloads go through ~/.m2 (and the user's settings.xml mirrors, if any) like any Maven build;
  # the copies in $out/lib are what the tests use, so a cleaned ~/.m2 costs nothing later.
  (cd "$root/native/cassandra" && mvn -B -Dcassandra.version="$cassandra_version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/lib" >"$out/maven.log" 2>&1) ||
    { tail -n 40 "$out/maven.log" >&2; echo "error: fetching Cassandra $cassandra_version from Maven Central failed" >&2; exit 1; }
  [ -f "$out/lib/cassandra-all-$cassandra_version.jar" ] ||
    { echo "error: Maven did not deliver cassandra-all-$cassandra_version.jar" >&2; exit 1; }
  # The resolved binary, not /usr/bin/java: a later switch of the system default (say to 21) must not change it.
  ln -s "$(readlink -f "$(command -v "$java")")" "$out/java"
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
build_once kubernetes "$(env_value KUBERNETES_VERSION)" build_kubernetes
build_once etcd "$(env_value ETCD_VERSION)" build_etcd
build_once kubeconform "$(env_value KUBECONFORM_VERSION)" build_kubeconform
build_once composecheck "$(composecheck_key)" build_composecheck
build_once cassandra "$cassandra_version" build_cassandra
build_once alertmanager "$(env_value ALERTMANAGER_VERSION)" build_alertmanager

# nativestack (native/nativestack/paths.py) reads the binaries' paths from here rather than re-deriving the keys.
cat >"$cache/binaries.env" <<PATHS
OTELCOL=$cache/otelcol-$collector_key/otelcol
LOKI_STANDIN=$cache/loki-standin-$standin_key/otelcol
JAEGER=$cache/jaeger-$jaeger_version/jaeger
PROMETHEUS=$cache/prometheus-$prometheus_version/prometheus
PROMTOOL=$cache/prometheus-$prometheus_version/promtool
KUBE_APISERVER=$cache/kubernetes-$(env_value KUBERNETES_VERSION)/kube-apiserver
KUBECTL=$cache/kubernetes-$(env_value KUBERNETES_VERSION)/kubectl
ETCD=$cache/etcd-$(env_value ETCD_VERSION)/etcd
KUBECONFORM=$cache/kubeconform-$(env_value KUBECONFORM_VERSION)/kubeconform
COMPOSECHECK=$cache/composecheck-$(composecheck_key)/composecheck
CASSANDRA=$cache/cassandra-$cassandra_version
ALERTMANAGER=$cache/alertmanager-$(env_value ALERTMANAGER_VERSION)/alertmanager
PATHS
