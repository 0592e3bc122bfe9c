#!/usr/bin/env bash
# revenue_engine demo: installs what it needs, builds and installs the
# extension, starts a throwaway cluster with the library preloaded, shows a
# user's usage turning into milestones, a goal, a streak and outbox events,
# then removes the cluster.  Run as root on Debian 12: bash scripts/demo.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/scripts/install-deps.sh"
make -C "$ROOT" -s >/dev/null
make -C "$ROOT" -s install >/dev/null

source "$ROOT/test/lib/cluster.sh"
DIR=$(mktemp -d /tmp/revenue_engine_demo.XXXXXX)
PORT=$(re_free_port)
trap 're_cluster_stop "$DIR"' EXIT
re_cluster_start "$DIR" "$PORT"
echo "cluster: $DIR (port $PORT), revenue_engine preloaded"

cp "$ROOT/scripts/demo.sql" "$DIR/demo.sql"
as_postgres psql -X -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -f "$DIR/demo.sql"
