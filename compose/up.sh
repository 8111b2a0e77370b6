#!/usr/bin/env bash
# `make up`: check Docker and compose v2, install the Loki Docker driver plugin if missing (for
# this host's architecture, at the tag pinned in .env), make sure a Grafana admin password
# exists, then `docker compose up -d --build --wait` and print where everything is.
# Options (environment, set by make): LOKI_DRIVER, JAEGER_STORAGE, PROFILES (see lib.sh),
# GRAFANA_ADMIN_PASSWORD (use this password instead of a generated one), UP_TIMEOUT (seconds).
set -euo pipefail
# shellcheck source=compose/lib.sh
. "$(dirname "$0")/lib.sh"

PASSWORD_FILE="$REPO_ROOT/.secrets/grafana-admin-password"

ensure_loki_driver() {
	local version enabled installed arch image
	version=$(env_value LOKI_DOCKER_DRIVER_VERSION)
	[ -n "$version" ] || die "LOKI_DOCKER_DRIVER_VERSION is missing from .env"
	if enabled=$(docker plugin inspect loki --format '{{.Enabled}}' 2>/dev/null); then
		if [ "$enabled" != true ]; then
			docker plugin enable loki >/dev/null ||
				die "the Loki driver plugin 'loki' is installed but cannot be enabled: see 'docker plugin inspect loki', or run 'make up LOKI_DRIVER=off'"
		fi
		installed=$(docker plugin inspect loki --format '{{.PluginReference}}')
		case "$installed" in
		*":$version-"*) ;;
		*) echo "note: keeping the installed Loki driver plugin $installed (pinned: $version); upgrading it needs every container using it stopped, see Loki's docker-driver docs" ;;
		esac
		return
	fi
	# The plugin runs in the daemon, so the daemon's architecture decides (not this client's).
	case "$(docker info --format '{{.OSType}}/{{.Architecture}}')" in
	linux/x86_64 | linux/amd64) arch=amd64 ;;
	linux/aarch64 | linux/arm64) arch=arm64 ;;
	*)
		die "the Loki Docker driver is published for Linux amd64 and arm64 daemons only (this one: $(docker info --format '{{.OSType}}/{{.Architecture}}')): run 'make up LOKI_DRIVER=off' (logs still reach Loki over OTLP)"
		;;
	esac
	image="grafana/loki-docker-driver:${version}-${arch}"
	echo "Installing the Loki Docker driver plugin $image as 'loki' (once per Docker host)..."
	docker plugin install "$image" --alias loki --grant-all-permissions >/dev/null ||
		die "could not install $image: run 'make up LOKI_DRIVER=off' to use the default log driver instead (logs still reach Loki over OTLP)"
}

# Grafana reads its admin password from this file (a compose secret). Compose bind-mounts file
# secrets as they are, ignoring uid/gid/mode outside Swarm, and Grafana runs as uid 472: the
# file must be readable by others (0644), so the directory is what keeps other local users out
# (0700). Never committed: .secrets/ is in .gitignore.
ensure_grafana_password() {
	local generated=""
	(umask 077 && mkdir -p "$(dirname "$PASSWORD_FILE")")
	chmod 700 "$(dirname "$PASSWORD_FILE")"
	if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
		printf '%s' "$GRAFANA_ADMIN_PASSWORD" >"$PASSWORD_FILE"
		if docker volume inspect "${PROJECT}_grafana-data" >/dev/null 2>&1; then
			echo "note: Grafana keeps the admin password it was first started with; to apply the new one, 'make clean' (deletes all data) or:"
			echo "      docker compose exec -T grafana grafana cli admin reset-admin-password --password-from-stdin < .secrets/grafana-admin-password"
		fi
	elif [ ! -s "$PASSWORD_FILE" ]; then
		# 144 random bits as hex: no characters that need quoting anywhere.
		generated=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
		[ ${#generated} -eq 36 ] || die "could not generate a password from /dev/urandom"
		printf '%s' "$generated" >"$PASSWORD_FILE"
	fi
	chmod 644 "$PASSWORD_FILE"
	if [ -n "$generated" ]; then
		echo "Generated the Grafana admin password (user admin): $generated"
		echo "  stored in .secrets/grafana-admin-password (git-ignored); set GRAFANA_ADMIN_PASSWORD to choose your own"
	fi
}

print_urls() {
	cat <<EOF

The stack is up (all healthchecks passing). On this machine only (127.0.0.1):
  Grafana      http://127.0.0.1:3000    user admin, password in .secrets/grafana-admin-password
  Jaeger UI    http://127.0.0.1:16686
  Prometheus   http://127.0.0.1:9090    /alerts: every rule and its state
  Alertmanager http://127.0.0.1:9093    firing alerts (also in Grafana: Alerting > Alert groups)
  Tempo API    http://127.0.0.1:3200
  Loki API     http://127.0.0.1:3100
  app-a        http://127.0.0.1:8000    try http://127.0.0.1:8000/chain
  app-b        http://127.0.0.1:8001
  app-c        http://127.0.0.1:8002
  OTLP in      grpc 127.0.0.1:4317, http 127.0.0.1:4318 (the Collector)
EOF
	case " ${PROFILES:-} " in
	*" load "*) echo "  Locust       http://127.0.0.1:8089    load against app-a" ;;
	*) echo "  Locust       not started: 'make up PROFILES=load'" ;;
	esac
	echo "'make ps' shows health, 'make logs' follows the logs, 'make down' stops, 'make clean' also deletes the data."
}

require_docker
case "${LOKI_DRIVER:-on}" in
on) ensure_loki_driver ;;
off) echo "LOKI_DRIVER=off: the apps log to json-file; their logs reach Loki over OTLP only." ;;
esac
ensure_grafana_password
compose_command up
"${COMPOSE[@]}" up -d --build --wait --wait-timeout "${UP_TIMEOUT:-300}" ||
	die "the stack did not become healthy: 'make ps' shows which service, 'make logs SERVICE=<name>' why"
print_urls
