# A Citus cluster on this machine for the Citus test and benchmark: a
# coordinator and two workers, each a throwaway cluster (test/lib/cluster.sh)
# of the PostgreSQL 15 copy that scripts/build-citus.sh builds with Citus.
# Source it after test/lib/cluster.sh with PG_CONFIG set to that copy.
#   citus_cluster_start DIR   -> sets CITUS_PORTS (coordinator first) and CITUS_DIRS
#   citus_cluster_stop        -> stops the three and removes them
#   cpsql N args...           -> psql as postgres on node N (0: coordinator) of database citus_test
#   citus_install_extension ROOT -> builds and installs revenue_engine into that copy

CITUS_DB=citus_test

# citus_install_extension ROOT: builds revenue_engine from a copy of the tree
# at ROOT (the checkout's objects may be another major's) and installs it into
# the PostgreSQL of $PG_CONFIG; prints the build's log and fails if it fails.
citus_install_extension() {
	local root="$1" build
	build=$(mktemp -d /tmp/revenue_engine_citus_build.XXXXXX)
	cp -a "$root/." "$build"
	rm -rf "$build/.git"
	if ! { make -C "$build" -s clean && make -C "$build" -s all install PG_CONFIG="$PG_CONFIG"; } >"$build/build.log" 2>&1; then
		cat "$build/build.log"
		rm -rf "$build"
		return 1
	fi
	rm -rf "$build"
}

citus_cluster_start() {
	local base="$1" i port
	CITUS_PORTS=()
	CITUS_DIRS=()
	for i in 0 1 2; do
		port=$(re_free_port)
		CITUS_PORTS+=("$port")
		CITUS_DIRS+=("$base/node$i")
		re_cluster_start "$base/node$i" "$port" \
			"shared_preload_libraries = 'citus,revenue_engine'" \
			"citus.shard_count = 4" \
			"max_connections = 200" \
			"max_worker_processes = 32" \
			"max_prepared_transactions = 100" \
			"wal_level = logical" \
			"log_min_messages = warning" \
			"revenue_engine.http_allow_private = on" || return 1
	done
	for i in 0 1 2; do
		as_postgres psql -X -q -h "${CITUS_DIRS[$i]}" -p "${CITUS_PORTS[$i]}" -U postgres -d postgres \
			-c "CREATE DATABASE $CITUS_DB" -c "\\c $CITUS_DB" -c "CREATE EXTENSION citus" >/dev/null || return 1
	done
	cpsql 0 -c "SELECT citus_set_coordinator_host('127.0.0.1', ${CITUS_PORTS[0]})" \
		-c "SELECT citus_add_node('127.0.0.1', ${CITUS_PORTS[1]})" \
		-c "SELECT citus_add_node('127.0.0.1', ${CITUS_PORTS[2]})" >/dev/null
}

cpsql() {
	local n="$1"
	shift
	as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "${CITUS_DIRS[$n]}" -p "${CITUS_PORTS[$n]}" \
		-U postgres -d "$CITUS_DB" "$@"
}

citus_cluster_stop() {
	local d
	for d in "${CITUS_DIRS[@]}"; do
		# RE_KEEP_WORK: the node's log is kept beside its removed directory
		[ -n "${RE_KEEP_WORK:-}" ] && [ -f "$d/server.log" ] && cp "$d/server.log" "$d.server.log"
		re_cluster_stop "$d"
	done
}
