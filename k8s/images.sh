#!/usr/bin/env bash
# `make images`: build the app and Collector images exactly as compose builds them (same
# contexts, Dockerfiles and build args from .env), tagged as k8s/base/kustomization.yaml's
# `images:` names them. With REGISTRY=host/path they are prefixed with it and pushed there, and
# the `images:` entries for your own overlay are printed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
env_value() {
	local v
	v=$(sed -n "s/^$1=//p" "$root/.env" | tail -n 1)
	[ -n "$v" ] || die "$1 is missing from .env"
	printf '%s' "$v"
}

command -v docker >/dev/null 2>&1 || die "docker is required to build images: https://docs.docker.com/get-docker/"
registry=${REGISTRY:-}
registry=${registry%/}
prefix=${registry:+$registry/}fastapi-observability

# The app's version names its image; the Collector image is the contrib release plus a probe.
app_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/services/pyproject.toml" | head -n 1)
[ -n "$app_version" ] || die "no version in services/pyproject.toml"
app_image="$prefix/app:$app_version"
collector_image="$prefix/collector:$(env_value OTELCOL_VERSION)"

docker build --build-arg "PYTHON_VERSION=$(env_value PYTHON_VERSION)" --build-arg "UV_VERSION=$(env_value UV_VERSION)" \
	-t "$app_image" -f "$root/services/Dockerfile" "$root/services"
docker build --build-arg "OTELCOL_VERSION=$(env_value OTELCOL_VERSION)" --build-arg "BUSYBOX_VERSION=$(env_value BUSYBOX_VERSION)" \
	-t "$collector_image" -f "$root/collector/Dockerfile" "$root/collector"

if [ -z "$registry" ]; then
	echo "built $app_image and $collector_image (not pushed: no REGISTRY)."
	echo "Load them into a local cluster: kind load docker-image $app_image $collector_image"
	echo "  (k3d image import ..., minikube image load ...), or run 'make images REGISTRY=...'."
	exit 0
fi
docker push "$app_image"
docker push "$collector_image"
cat <<OVERLAY
pushed $app_image and $collector_image.
Use them from an overlay of your own (kustomization.yaml beside your copy of this repo):
  resources: [<this repo>/k8s/overlays/single-node]
  images:
    - name: fastapi-observability/app
      newName: $prefix/app
    - name: fastapi-observability/collector
      newName: $prefix/collector
OVERLAY
