# Throwaway PostgreSQL clusters for the demo, the benchmarks and the tests.
# Source it; clusters run as the postgres OS user (initdb refuses root) on a
# free port under a private directory, and re_cluster_stop removes them.

# PG_CONFIG picks the PostgreSQL to build against and run (default: the one on PATH).
export PG_CONFIG="${PG_CONFIG:-pg_config}"
PGBIN="${PGBIN:-$($PG_CONFIG --bindir)}"

as_postgres() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
	else
		env PATH="$PGBIN:$PATH" "$@"
	fi
}

# A TCP port nothing listens on.
re_free_port() {
	python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# re_cluster_start DIR PORT [extra postgresql.conf lines...]
re_cluster_start() {
	local dir="$1" port="$2"
	shift 2
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres: "$dir"
	as_postgres initdb -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log"; return 1; }
	{
		echo "port = $port"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'revenue_engine'"
		echo "fsync = off"
		echo "timezone = 'UTC'"
		for line in "$@"; do echo "$line"; done
	} >>"$dir/data/postgresql.conf"
	as_postgres pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
		{ cat "$dir/server.log"; return 1; }
}

re_cluster_stop() {
	local dir="$1"
	[ -d "$dir/data" ] && as_postgres pg_ctl -D "$dir/data" -m fast -w stop >/dev/null 2>&1
	rm -rf "$dir"
}

# Settings of the benchmarks' clusters: large enough to keep the data in memory
# and no checkpoint, JIT or autovacuum in the middle of a timed phase (each
# phase VACUUMs explicitly when it needs to).
RE_BENCH_SETTINGS=(
	"shared_buffers = 256MB"
	"max_wal_size = 8GB"
	"checkpoint_timeout = 30min"
	"jit = off"
	"autovacuum = off"
	"log_checkpoints = off"
)

# re_nginx_sink DIR PORT [extra http-block lines...]: a local nginx answering
# 204 to everything on 127.0.0.1:PORT (keep-alive, no access log), in the
# foreground under DIR; sets NGINX_PID and returns once it answers.
re_nginx_sink() {
	local dir="$1" port="$2"
	shift 2
	mkdir -p "$dir"
	{
		cat <<-CONF
		daemon off;
		master_process off;
		worker_processes 1;
		pid $dir/nginx.pid;
		error_log $dir/error.log warn;
		events { worker_connections 4096; }
		http {
		    client_body_temp_path $dir/body;
		    proxy_temp_path $dir/proxy;
		    fastcgi_temp_path $dir/fastcgi;
		    uwsgi_temp_path $dir/uwsgi;
		    scgi_temp_path $dir/scgi;
		    access_log off;
		    keepalive_requests 100000;
		    keepalive_timeout 300s;
		    server { listen 127.0.0.1:$port; location / { return 204; } }
		CONF
		for line in "$@"; do echo "    $line"; done
		echo "}"
	} >"$dir/nginx.conf"
	/usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
	NGINX_PID=$!
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
		sleep 0.05
	done
	cat "$dir/error.log"
	return 1
}
