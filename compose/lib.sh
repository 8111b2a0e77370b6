# shellcheck shell=bash
# Shared by up.sh and run.sh (the `make up/down/logs/ps/clean` targets): the checks for
# Docker and compose v2, and the docker compose command line that the make options select.
#   LOKI_DRIVER=on|off            off: backends/compose.default-logging.yaml (no log plugin)
#   JAEGER_STORAGE=badger|cassandra  cassandra: profile `cassandra` + backends/compose.cassandra.yaml
#   TOPOLOGY=single|gateway       gateway: backends/compose.gateway.yaml (agent + 3 tail-sampling gateways)
#   PROFILES="load ..."           extra compose profiles (`load` = Locust)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# `!override` in backends/compose.default-logging.yaml needs 2.24.4; --wait needs 2.1.1.
MIN_COMPOSE_VERSION=2.24.4
# docker-compose.yaml's `name:`; volumes are called <project>_<volume>.
# shellcheck disable=SC2034 # used by up.sh
PROJECT=fastapi-observability

die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# The value of KEY in .env, the one source of versions.
env_value() {
	sed -n "s/^$1=//p" "$REPO_ROOT/.env" | tail -n 1
}

# True when dotted version $1 >= $2.
version_ge() {
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

require_docker() {
	command -v docker >/dev/null 2>&1 ||
		die "docker is required: install Docker Engine (Linux) or Docker Desktop, https://docs.docker.com/get-docker/"
	local version
	version=$(docker compose version --short 2>/dev/null) ||
		die "docker compose v2 is required: install the Compose plugin, https://docs.docker.com/compose/install/ (the Python docker-compose v1 cannot run this stack)"
	version=${version#v}
	version_ge "$version" "$MIN_COMPOSE_VERSION" ||
		die "docker compose v2 >= $MIN_COMPOSE_VERSION is required, found $version: update the Compose plugin, https://docs.docker.com/compose/install/"
	docker info >/dev/null 2>&1 ||
		die "the Docker daemon is not reachable: start Docker (or get access to its socket) and retry"
}

# Sets the array COMPOSE to the docker compose command line for subcommand $1. `up` gets exactly
# the selected files and profiles; the others (down, ps, logs...) every profile, so containers
# of a profile started earlier are listed and removed too.
compose_command() {
	COMPOSE=(docker compose --project-directory "$REPO_ROOT" -f "$REPO_ROOT/docker-compose.yaml")
	case "${LOKI_DRIVER:-on}" in
	on) ;;
	off) COMPOSE+=(-f "$REPO_ROOT/backends/compose.default-logging.yaml") ;;
	*) die "LOKI_DRIVER must be on or off, not '${LOKI_DRIVER}'" ;;
	esac
	case "${JAEGER_STORAGE:-badger}" in
	badger) ;;
	cassandra) COMPOSE+=(-f "$REPO_ROOT/backends/compose.cassandra.yaml" --profile cassandra) ;;
	*) die "JAEGER_STORAGE must be badger or cassandra, not '${JAEGER_STORAGE}'" ;;
	esac
	case "${TOPOLOGY:-single}" in
	single) ;;
	gateway) COMPOSE+=(-f "$REPO_ROOT/backends/compose.gateway.yaml") ;;
	*) die "TOPOLOGY must be single or gateway, not '${TOPOLOGY}'" ;;
	esac
	if [ "$1" = up ]; then
		local profile
		for profile in ${PROFILES:-}; do
			COMPOSE+=(--profile "$profile")
		done
	else
		COMPOSE+=(--profile load --profile cassandra)
	fi
}
