#!/usr/bin/env bash
# `make down/logs/ps/clean`: docker compose with the files the make options select (lib.sh),
# after the same Docker and compose v2 checks as `make up`. Usage: run.sh <subcommand> [args]
set -euo pipefail
# shellcheck source=compose/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -gt 0 ] || die "usage: $0 <docker compose subcommand> [args...]"
require_docker
compose_command "$1"
exec "${COMPOSE[@]}" "$@"
