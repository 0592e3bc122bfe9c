#!/usr/bin/env bash
# The Citus test (issue 11, point 3): a coordinator and two workers on this
# machine (Citus 13.2.2 from ../shared/vendor, citus.shard_count = 4), each
# run by the postgres OS user on a free port, removed afterwards.
#
#   1. revenue_engine.distribute(): reference tables, tenant tables
#      distributed by tenant_id and colocated, tenant-first functions
#      distributed by their tenant;
#   2. 3 tenants x 200 users of usage tracking with profiles and time zones,
#      called through the distributed tenant-first functions: totals,
#      milestones and events equal a single-node run of the same calls;
#   3. an endpoint per tenant receives every event exactly once, no dead rows,
#      and each event was sent by the worker of the node holding its tenant;
#   4. a blast sent through a channel, with signed WhatsApp callbacks: its
#      funnel (counters kept by the per-row triggers on the shards) equals a
#      scan of its recipients;
#   5. no worker exited, no server crashed (checked last);
#   6. a drip campaign through the tenant-first functions: contacts, consent,
#      templates, a campaign, enrollments; the step runner of the tenant's
#      node sends the first step to the receiver, a reply stops one contact,
#      the others get the second step, the history and funnel agree.
#
# Prints one "ok N - ..." / "not ok N - ..." line per check and ends with
# "N passed, N failed"; exits non-zero on a failure.  Skipped, with a message
# and "0 passed, 0 failed", where ../shared/vendor is absent.
#   RE_KEEP_WORK=1 keeps the clusters' directory.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENDOR="${RE_VENDOR:-$ROOT/../shared/vendor}"
if [ ! -f "$VENDOR/citus-13.2.2.tar.gz" ]; then
	echo "# SKIP citus: $VENDOR/citus-13.2.2.tar.gz is absent (the test-only Citus sources live in ../shared/vendor beside the checkout)"
	echo "0 passed, 0 failed"
	exit 0
fi

passed=0
failed=0
n=0
check() {			# check NAME COMMAND... : ok when the command succeeds
	local name="$1"
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $name"
		passed=$((passed + 1))
	else
		echo "not ok $n - $name"
		failed=$((failed + 1))
	fi
}
is() {				# is GOT WANT: equal strings (shows both when not)
	[ "$1" = "$2" ] && return 0
	echo "#   got:  $1" | head -c 2000
	echo
	echo "#   want: $2" | head -c 2000
	echo
	return 1
}
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}

echo "== Citus: building PostgreSQL 15 with Citus 13.2.2 (once per machine)"
if ! PGC=$(bash "$ROOT/scripts/build-citus.sh" | tail -1) || [ -z "$PGC" ]; then
	echo "not ok 1 - build Citus"
	echo "0 passed, 1 failed"
	exit 1
fi
export PG_CONFIG="$PGC"
unset PGBIN
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/citus/cluster.sh"
if ! citus_install_extension "$ROOT"; then
	echo "not ok 1 - build revenue_engine into the Citus copy"
	echo "0 passed, 1 failed"
	exit 1
fi

WORK=$(mktemp -d /tmp/revenue_engine_citus.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
RX_PID=
cleanup() {
	[ -n "$RX_PID" ] && kill "$RX_PID" 2>/dev/null
	citus_cluster_stop 2>/dev/null
	re_cluster_stop "$WORK/single" 2>/dev/null
	if [ -n "${RE_KEEP_WORK:-}" ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The clock every node and the single node take as now (users' local days).
CLOCK='2026-03-15 12:00:00+00'

echo "== starting a coordinator and two workers"
check "a coordinator and two workers start" citus_cluster_start "$WORK/citus"
[ "$failed" -eq 0 ] || finish
re_cluster_start "$WORK/single" "$(re_free_port)" "revenue_engine.http_allow_private = on" >/dev/null
spsql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/single" -p "$(sed -n 's/^port = //p' "$WORK/single/data/postgresql.conf" | tail -1)" -U postgres -d postgres "$@"; }

python3 "$ROOT/test/receiver/receiver.py" --port 0 --port-file "$WORK/rx.port" \
	--log "$WORK/rx.jsonl" --keep 100000 >"$WORK/rx.out" 2>&1 &
RX_PID=$!
for _ in $(seq 100); do [ -s "$WORK/rx.port" ] && break; sleep 0.1; done
RX="http://127.0.0.1:$(cat "$WORK/rx.port")"

for i in 0 1 2; do
	cpsql "$i" -c "SET citus.enable_ddl_propagation = off" \
		-c "ALTER DATABASE $CITUS_DB SET revenue_engine.clock_override = '$CLOCK'" >/dev/null
done
spsql -c "ALTER DATABASE postgres SET revenue_engine.clock_override = '$CLOCK'" -c "CREATE EXTENSION revenue_engine" >/dev/null

# ---------------------------------------------------------------------------
echo "== 1. distribute()"
cpsql 0 -c "CREATE EXTENSION revenue_engine" >/dev/null
check "CREATE EXTENSION on the coordinator reaches the workers" \
	is "$(cpsql 1 -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'revenue_engine'")$(cpsql 2 -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'revenue_engine'")" "11"
check "distribute() on a worker node is refused with 0A000" \
	is "$(cpsql 1 -Atc "DO \$\$ BEGIN PERFORM revenue_engine.distribute(); EXCEPTION WHEN feature_not_supported THEN RAISE NOTICE 'refused'; END \$\$" 2>&1 | grep -c refused)" "1"
cpsql 0 -c "SELECT * FROM revenue_engine.distribute()" >"$WORK/distribute.out" 2>&1
check "distribute() runs" grep -q "distributed by tenant_id" "$WORK/distribute.out"
cat "$WORK/distribute.out" | sed 's/^/# /'
check "the configuration tables are reference tables" \
	is "$(cpsql 0 -Atc "SELECT string_agg(logicalrelid::text, ',' ORDER BY 1) FROM pg_dist_partition
	                     WHERE partmethod = 'n' AND logicalrelid::text LIKE 'revenue_engine.%'")" \
	"revenue_engine.event_types,revenue_engine.role_tenants,revenue_engine.usage_types"
check "every tenant table is distributed by tenant_id, all in one colocation group of 4 shards" \
	is "$(cpsql 0 -Atc "
	  SELECT count(*) = (SELECT count(DISTINCT c.oid) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
	                      WHERE c.relnamespace = 'revenue_engine'::regnamespace AND c.relkind = 'r' AND a.attname = 'tenant_id')
	         AND count(DISTINCT colocationid) = 1
	         AND bool_and(column_to_column_name(logicalrelid, partkey) = 'tenant_id')
	         AND bool_and((SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid) = 4)
	    FROM pg_dist_partition p WHERE partmethod = 'h' AND logicalrelid::text LIKE 'revenue_engine.%'")" "t"
check "every tenant-first app function is distributed by its tenant, colocated with the tables" \
	is "$(cpsql 0 -Atc "
	  SELECT count(*) > 0 AND bool_and(o.distribution_argument_index = 0
	                                   AND o.colocationid = (SELECT colocationid FROM pg_dist_partition
	                                                          WHERE logicalrelid = 'revenue_engine.user_profiles'::regclass))
	    FROM pg_proc p JOIN pg_dist_object o ON o.classid = 'pg_proc'::regclass AND o.objid = p.oid
	   WHERE p.pronamespace = 'revenue_engine'::regnamespace AND p.proargnames[1] = 'tenant'
	     AND has_function_privilege('revenue_engine_user', p.oid, 'EXECUTE')")" "t"
check "track_daily_usage(tenant, ...) is distributed" \
	is "$(cpsql 0 -Atc "SELECT count(*) FROM pg_dist_object
	                     WHERE objid = 'revenue_engine.track_daily_usage(text, uuid, text, integer, date)'::regprocedure
	                       AND distribution_argument_index = 0" 2>&1)" "1"
check "the funnel's transition-table triggers are replaced by per-row ones on the shards" \
	is "$(cpsql 1 -Atc "SELECT string_agg(DISTINCT tgname || ':' || (tgtype & 1 = 1) || ':' || (tgnewtable IS NULL AND tgoldtable IS NULL), ',' ORDER BY tgname || ':' || (tgtype & 1 = 1) || ':' || (tgnewtable IS NULL AND tgoldtable IS NULL))
	                     FROM pg_trigger WHERE tgrelid::regclass::text LIKE 'revenue_engine.blast_recipients_1%' AND tgname LIKE 'blast_recipients_funnel%' AND tgname NOT LIKE '%truncate%'" | sed 's/_[0-9]*:/:/g' | tr ',' '\n' | sort -u | paste -sd,)" \
	"blast_recipients_funnel_delete_row:true:true,blast_recipients_funnel_insert_row:true:true,blast_recipients_funnel_update:true:true"

# ---------------------------------------------------------------------------
echo "== 2. usage: 3 tenants x 200 users, against a single node"
# The same calls for both: endpoints first (every event is delivered), then
# profiles with time zones and goals, then uses on several local days.
python3 - "$RX" >"$WORK/usage.sql" <<'PY'
import random, sys, uuid
rx = sys.argv[1]
random.seed(11)
zones = ['UTC', 'Asia/Tokyo', 'America/Los_Angeles', 'Europe/Berlin', 'Pacific/Kiritimati', 'America/St_Johns']
tenants = ['acme', 'globex', 'initech']
print("\\set ON_ERROR_STOP 1")
for t in tenants:
    print(f"SET revenue_engine.tenant = '{t}';")
    print(f"SELECT revenue_engine.create_endpoint('sink', '{rx}/{t}', retry_schedule => '{{1 second,1 second,1 second,1 second,1 second}}');")
print("RESET revenue_engine.tenant;")
users = {t: [uuid.UUID(int=random.getrandbits(128), version=4) for _ in range(200)] for t in tenants}
for t in tenants:
    for i, u in enumerate(users[t]):
        goal = '{"reply": %d}' % (2 + i % 4) if i % 3 else '{}'
        print(f"SELECT 1 FROM revenue_engine.set_user_profile('{t}', '{u}', '{zones[i % len(zones)]}', '{goal}');")
calls = []
for t in tenants:
    for i, u in enumerate(users[t]):
        for d in range(1 + i % 6):
            day = f"2026-03-{9 + d:02d}"
            calls.append((t, u, 'reply', 1 + (i * 7 + d) % 9, day))
            if (i + d) % 4 == 0:
                calls.append((t, u, 'research', 1, day))
        calls.append((t, u, 'reply', 1 + i % 3, None))
random.shuffle(calls)
for t, u, ty, c, day in calls:
    d = f"'{day}'" if day else "NULL"
    print(f"SELECT 1 FROM revenue_engine.track_daily_usage('{t}', '{u}', '{ty}', {c}, {d});")
PY
ncalls=$(grep -c track_daily_usage "$WORK/usage.sql")
cp "$WORK/usage.sql" "$WORK/usage_single.sql"
sed -i "s|$RX/|http://127.0.0.1:1/|" "$WORK/usage_single.sql"	# the single node delivers nothing anywhere
chmod a+r "$WORK"/*.sql
check "the $ncalls calls run on the single node" spsql -o /dev/null -f "$WORK/usage_single.sql"
t0=$(date +%s.%N)
check "the $ncalls calls run on Citus through the distributed functions" cpsql 0 -o /dev/null -f "$WORK/usage.sql"
echo "# $(python3 -c "print('%.0f calls/s' % ($ncalls / ($(date +%s.%N) - $t0)))") through psql, one client"

# what each side computed, without ids and instants of its own
Q_LIFETIME="SELECT tenant_id, user_id, usage_type, total, latest_milestone, current_streak, streak_end_date, best_streak
              FROM revenue_engine.lifetime_usage ORDER BY 1, 2, 3"
Q_DAILY="SELECT tenant_id, user_id, usage_type, usage_date, count, goal, goal_achieved_at IS NOT NULL, streak_days
           FROM revenue_engine.daily_usage ORDER BY 1, 2, 3, 4"
Q_MILESTONES="SELECT tenant_id, user_id, usage_type, milestone, lifetime_total
                FROM revenue_engine.milestones_reached ORDER BY 1, 2, 3, 4"
Q_EVENTS="SELECT tenant_id, user_id, event_type, event_data - 'id' - 'first_used_at', user_data
            FROM revenue_engine.webhook_events ORDER BY 1, 2, 3, (event_data - 'id' - 'first_used_at')::text"
Q_PROFILES="SELECT tenant_id, user_id, timezone, daily_goals FROM revenue_engine.user_profiles ORDER BY 1, 2"
for q in PROFILES LIFETIME DAILY MILESTONES EVENTS; do
	v="Q_$q"
	sql="${!v}"
	spsql -Atc "$sql" >"$WORK/single_$q.txt"
	cpsql 0 -Atc "$sql" >"$WORK/citus_$q.txt"
	check "$(echo "$q" | tr 'A-Z' 'a-z') on Citus equal the single node's ($(wc -l <"$WORK/single_$q.txt") rows)" \
		cmp -s "$WORK/single_$q.txt" "$WORK/citus_$q.txt"
	cmp -s "$WORK/single_$q.txt" "$WORK/citus_$q.txt" ||
		diff "$WORK/single_$q.txt" "$WORK/citus_$q.txt" | head -5 | sed 's/^/#   /'
done
nevents=$(cpsql 0 -Atc "SELECT count(*) FROM revenue_engine.webhook_events")
check "the calls wrote events ($nevents), milestones and goals" \
	is "$(cpsql 0 -Atc "SELECT count(*) > 0 FROM revenue_engine.webhook_events WHERE event_type = 'milestone_reached'")$(cpsql 0 -Atc "SELECT count(DISTINCT tenant_id) FROM revenue_engine.webhook_events")" "t3"
check "profiles' time zones were used (a local day other than UTC's)" \
	is "$(cpsql 0 -Atc "SELECT count(DISTINCT usage_date) FILTER (WHERE usage_date <> '2026-03-15') > 0 FROM revenue_engine.daily_usage d WHERE usage_date >= '2026-03-15'")" "t"

# A usage type changed on the coordinator (a reference table) reaches the
# settings a worker node's backend cached: its trigger fires on the shards.
check "a usage type changed on the coordinator applies at once to the distributed calls" \
	is "$(cpsql 0 -At <<'SQL'
SELECT coalesce(revenue_engine.track_daily_usage('acme', '00000000-0000-0000-0000-00000000000a', 'custom_type', 1, NULL)->>'milestone_reached', 'none');
SELECT (revenue_engine.set_usage_type('custom_type', milestones => '{2}')).milestones;
SELECT coalesce(revenue_engine.track_daily_usage('acme', '00000000-0000-0000-0000-00000000000a', 'custom_type', 1, NULL)->>'milestone_reached', 'none');
SQL
)" "$(printf 'none\n{2}\n2')"

# The application role: its tenant-first calls work; its own reads of a
# tenant table are refused on the shards (its session's tenant is not
# there), never answered with another tenant's rows or none.
cpsql 0 -c "CREATE ROLE citus_app LOGIN" -c "GRANT revenue_engine_user TO citus_app" >/dev/null
check "the application role's tenant-first call runs on its tenant's node" \
	is "$(cpsql 0 -At -c "SET ROLE citus_app" -c "SELECT revenue_engine.track_daily_usage('acme', '00000000-0000-0000-0000-00000000000b', 'reply', 2, NULL)->>'lifetime_total'")" "2"
check "the application role's read of a tenant table on Citus is refused with 0A000" \
	is "$(cpsql 0 -At -c "SET ROLE citus_app" -c "SET revenue_engine.tenant = 'acme'" \
	        -c "DO \$\$ BEGIN PERFORM count(*) FROM revenue_engine.lifetime_usage; RAISE NOTICE 'answered';
	            EXCEPTION WHEN feature_not_supported THEN RAISE NOTICE 'refused'; END \$\$" 2>&1 | grep -oE 'refused|answered')" "refused"

# A bound login that SET ROLE to an unbound login role stays bound: Citus
# runs a tenant form's call on its tenant's node as the current user, where
# the bound login is not seen, so the coordinator checks the tenant first
# (a call's own check there would see only the unbound role).
cpsql 0 -c "CREATE ROLE citus_shared LOGIN" -c "GRANT revenue_engine_user TO citus_shared" \
	-c "CREATE ROLE citus_bound LOGIN" -c "GRANT citus_shared TO citus_bound" \
	-c "SELECT revenue_engine.bind_role('citus_bound', 'acme')" >/dev/null
bound_psql() { as_postgres psql -X -q -At -h "${CITUS_DIRS[0]}" -p "${CITUS_PORTS[0]}" -U citus_bound -d "$CITUS_DB" "$@"; }
for call in "SELECT revenue_engine.track_daily_usage('globex', '00000000-0000-0000-0000-00000000000c', 'reply', 1, NULL)" \
	"SELECT tag FROM revenue_engine.funnel_by_tag('globex', NULL, NULL, NULL)" \
	"SELECT tag FROM revenue_engine.funnel_by_tag(only_tag => NULL, tenant => 'globex', from_date => NULL, to_date => NULL)"; do
	check "a bound login after SET ROLE to an unbound role is refused another tenant on Citus: ${call:7:60}" \
		is "$(bound_psql -c "SET ROLE citus_shared" \
		        -c "$call" 2>&1 | grep -oE 'ERROR: +role "citus_bound" is bound to tenant "acme"|^[^E].*' | head -1)" \
		'ERROR:  role "citus_bound" is bound to tenant "acme"'
done
check "... also as a prepared statement's parameter" \
	is "$(bound_psql -c "SET ROLE citus_shared" \
	        -c "PREPARE f(text) AS SELECT tag FROM revenue_engine.funnel_by_tag(\$1, NULL, NULL, NULL)" \
	        -c "EXECUTE f('globex')" 2>&1 | grep -oE 'ERROR: +role "citus_bound" is bound to tenant "acme"|^[^E].*' | head -1)" \
	'ERROR:  role "citus_bound" is bound to tenant "acme"'
check "... also when the statement was planned before SET ROLE (its plan is made again, and checked)" \
	is "$(bound_psql -c "PREPARE f AS SELECT tag FROM revenue_engine.funnel_by_tag('globex', NULL, NULL, NULL)" \
	        -c "EXECUTE f" -c "SET ROLE citus_shared" -c "EXECUTE f" 2>&1 | grep -cE 'ERROR: +role "citus_bound" is bound to tenant "acme"')" "2"
cpsql 0 -c "CREATE SCHEMA citus_shared_fns AUTHORIZATION citus_shared" >/dev/null
as_postgres psql -X -q -h "${CITUS_DIRS[0]}" -p "${CITUS_PORTS[0]}" -U citus_shared -d "$CITUS_DB" -c "
  CREATE FUNCTION citus_shared_fns.tags(t text) RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER
      AS \$\$ BEGIN RETURN QUERY SELECT tag FROM revenue_engine.funnel_by_tag(t, NULL, NULL, NULL); END \$\$;
  GRANT USAGE ON SCHEMA citus_shared_fns TO PUBLIC" >/dev/null 2>&1
check "... also through a SECURITY DEFINER function of the unbound role, whose plan becomes generic" \
	is "$(bound_psql -c "SELECT count(*) FROM generate_series(1, 8) g, LATERAL citus_shared_fns.tags('acme' || repeat('', g))" \
	        -c "SELECT count(*) FROM generate_series(1, 8) g, LATERAL citus_shared_fns.tags('globex' || repeat('', g))" 2>&1 | grep -oE '^[0-9]+$|ERROR: +role "citus_bound" is bound to tenant "acme"' | paste -sd,)" \
	'0,ERROR:  role "citus_bound" is bound to tenant "acme"'
check "... and the unbound role itself acts for the tenant it names" \
	is "$(as_postgres psql -X -q -At -h "${CITUS_DIRS[0]}" -p "${CITUS_PORTS[0]}" -U citus_shared -d "$CITUS_DB" \
	        -c "SELECT count(*) FROM revenue_engine.funnel_by_tag('globex', NULL, NULL, NULL)" 2>&1)" "0"

# ---------------------------------------------------------------------------
echo "== 3. delivery: every event exactly once, each by its node's worker"
nevents=$(cpsql 0 -Atc "SELECT count(*) FROM revenue_engine.webhook_events")
for _ in $(seq 120); do
	left=$(cpsql 0 -Atc "SELECT count(*) FROM revenue_engine.deliveries WHERE status <> 'sent'")
	[ "$left" = 0 ] && break
	sleep 0.5
done
check "every delivery is sent" is "$left" "0"
check "no dead delivery, no failed event" \
	is "$(cpsql 0 -Atc "SELECT (SELECT count(*) FROM revenue_engine.deliveries WHERE status = 'dead') + (SELECT count(*) FROM revenue_engine.webhook_events WHERE status <> 'sent')")" "0"
check "the endpoints got $nevents POSTs, one per event" \
	is "$(python3 -c "
import json, sys
ids = [json.loads(l)['webhook_id'] for l in open('$WORK/rx.jsonl')]
print(len(ids), len(set(ids)))")" "$nevents $nevents"
check "each POST went to its tenant's endpoint and is the event's id" \
	is "$(cpsql 0 -Atc "SELECT string_agg(tenant_id || ' ' || id, E'\n' ORDER BY (tenant_id || ' ' || id) COLLATE \"C\") FROM revenue_engine.webhook_events" | md5sum)" \
	"$(python3 -c "
import json
rows = sorted((json.loads(l)['path'].strip('/'), json.loads(l)['webhook_id']) for l in open('$WORK/rx.jsonl'))
print('\n'.join(t + ' ' + i for t, i in rows))" | md5sum)"
groups=$(cpsql 0 -Atc "SELECT string_agg(s.shardminvalue || ':' || n.groupid, ' ')
                         FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
                        WHERE s.logicalrelid = 'revenue_engine.delivery_attempts'::regclass")
check "every attempt was logged once, by the node holding the tenant (ids from its own sequence range)" \
	is "$(cpsql 0 -Atc "
	  WITH g AS (SELECT split_part(x, ':', 1)::int AS lo, split_part(x, ':', 2)::int AS grp
	               FROM unnest(string_to_array('$groups', ' ')) x),
	       a AS (SELECT tenant_id, event_id, id, worker_hash(tenant_id) AS h FROM revenue_engine.delivery_attempts)
	  SELECT count(*) = $nevents AND count(DISTINCT (tenant_id, event_id)) = $nevents
	         AND bool_and((id >> 48) = (SELECT grp FROM g WHERE g.lo <= a.h ORDER BY g.lo DESC LIMIT 1))
	    FROM a")" "t"
for _ in $(seq 40); do
	grep -q "holds no shard of revenue_engine's distributed tables" "${CITUS_DIRS[0]}/server.log" && break
	sleep 0.5
done
check "the coordinator's worker delivers nothing (it holds no shard)" \
	grep -q "holds no shard of revenue_engine's distributed tables" "${CITUS_DIRS[0]}/server.log"
check "each worker node drains its own shard groups" \
	is "$(grep -l "delivering from 2 local shard group(s)" "${CITUS_DIRS[1]}/server.log" "${CITUS_DIRS[2]}/server.log" | wc -l)" "2"

# ---------------------------------------------------------------------------
echo "== 4. a blast with signed callbacks"
SECRET=citus-test-secret
as_postgres curl -s -o /dev/null -X POST -H 'content-type: application/json' \
	-d '{"mode": "provider", "shape": "whatsapp"}' "$RX/_control/mode"
cpsql 0 >/dev/null <<SQL
SET revenue_engine.tenant = 'globex';
SELECT revenue_engine.create_channel('wa', '$RX/v19.0/1/messages',
         body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}',
         max_in_flight => 16, retry_schedule => '{1 second,1 second,1 second}');
SELECT revenue_engine.set_channel_status_source('wa', webhook_kind => 'whatsapp', webhook_secret => '$SECRET');
SQL
blast=$(cpsql 0 -Atc "SELECT blast_id FROM revenue_engine.create_blast('globex', 'wa', 'citus', NULL,
          \$q\$SELECT '+1555' || lpad(g::text, 7, '0'), 'user ' || g FROM generate_series(1, 300) g\$q\$,
          'Hi {{name}}', NULL, '{}', NULL, 0, 'error')" 2>"$WORK/blast.err")
check "create_blast(tenant, ...) makes a blast of 300 on Citus" test -n "$blast"
[ -s "$WORK/blast.err" ] && sed 's/^/#   /' "$WORK/blast.err"
for _ in $(seq 120); do
	st=$(cpsql 0 -Atc "SET revenue_engine.tenant = 'globex'; SELECT status FROM revenue_engine.blasts WHERE id = ${blast:-0}")
	[ "$st" = completed ] && break
	sleep 0.5
done
check "the blast is sent and completed" is "$st" "completed"
# callbacks: failed for 1 in 10, delivered for the others, read for 2 in 3 of those, in bodies of 25 items
cpsql 0 -Atc "SET revenue_engine.tenant = 'globex';
              SELECT provider_message_id || ' ' || phone || ' ' || id FROM revenue_engine.blast_recipients
               WHERE blast_id = ${blast:-0} ORDER BY id" >"$WORK/mids.txt"
python3 - "$SECRET" "$WORK/mids.txt" >"$WORK/callbacks.sql" <<'PY'
import hashlib, hmac, json, sys
secret, path = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(path) if l.strip()]
items = []
for k, (mid, phone, rid) in enumerate(rows):
    digits = phone.lstrip('+')
    if k % 10 == 3:
        items.append({'id': mid, 'status': 'failed', 'timestamp': str(1773576100 + k), 'recipient_id': digits,
                      'errors': [{'code': 131026, 'title': 'Message undeliverable'}]})
        continue
    items.append({'id': mid, 'status': 'delivered', 'timestamp': str(1773576000 + k), 'recipient_id': digits})
    if k % 3:
        items.append({'id': mid, 'status': 'read', 'timestamp': str(1773576200 + k), 'recipient_id': digits})
for i in range(0, len(items), 25):
    body = json.dumps({'object': 'whatsapp_business_account', 'entry': [{'id': '1', 'changes': [{'field': 'messages',
        'value': {'messaging_product': 'whatsapp', 'metadata': {'phone_number_id': '1'}, 'statuses': items[i:i + 25]}}]}]})
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = json.dumps({'X-Hub-Signature-256': 'sha256=' + sig, 'Content-Type': 'application/json'})
    q = lambda s: "'" + s.replace("'", "''") + "'"
    print(f"SELECT count(*) FROM revenue_engine.ingest_status_webhook('globex', 'wa', {q(headers)}, {q(body)});")
PY
chmod a+r "$WORK/callbacks.sql"
check "the signed callbacks are ingested through ingest_status_webhook(tenant, ...)" \
	cpsql 0 -o "$WORK/callbacks.out" -f "$WORK/callbacks.sql"
check "a callback with a bad signature is refused with 28000" \
	is "$(cpsql 0 -Atc "DO \$\$ BEGIN PERFORM revenue_engine.ingest_status_webhook('globex', 'wa', '{\"X-Hub-Signature-256\": \"sha256=00\"}', '{}');
	                    EXCEPTION WHEN invalid_authorization_specification THEN RAISE NOTICE 'refused'; END \$\$" 2>&1 | grep -c refused)" "1"
SCAN="SELECT count(*), count(sent_at), count(delivered_at), count(read_at), count(replied_at), count(closed_at),
             count(*) FILTER (WHERE status = 'failed')
        FROM revenue_engine.blast_recipients WHERE blast_id = ${blast:-0}"
FUNNEL="SELECT total, sent, delivered, read, replied, closed, failed FROM revenue_engine.blast_funnel WHERE blast_id = ${blast:-0}"
scan=$(cpsql 0 -Atc "SET revenue_engine.tenant = 'globex'; $SCAN")
funnel=$(cpsql 0 -Atc "SET revenue_engine.tenant = 'globex'; $FUNNEL")
echo "# scan:   $scan"
echo "# funnel: $funnel"
check "blast_funnel equals the scan of blast_recipients" is "$funnel" "$scan"
check "the callbacks moved recipients (delivered and read counted, some failed)" \
	is "$(echo "$scan" | awk -F'|' '{print ($1 == 300 && $3 == 270 && $4 == 180 && $7 == 30)}')" "1"

# The funnel's per-row trigger fires in whatever session writes a shard: a
# Citus connection brings its role's and database's search_path, which a
# database owner sets.  It must evaluate no operator of theirs (it runs as
# whoever writes, the extension's owner in create_blast).  A fresh session
# (the trigger looks the counters shard up once per backend) on the node that
# holds the blast's recipients deletes one in a transaction rolled back.
shard_node=; shard=
for i in 1 2; do
	shard=$(cpsql "$i" -Atc "SET citus.override_table_visibility = off" -c "
	  SELECT c.relname FROM pg_class c WHERE c.relname ~ '^blast_recipients_[0-9]+$' AND c.relkind = 'r'
	     AND c.relnamespace = 'revenue_engine'::regnamespace" | while read -r s; do
		[ "$(cpsql "$i" -Atc "SELECT count(*) > 0 FROM revenue_engine.$s")" = t ] && echo "$s" && break
	done)
	[ -n "$shard" ] && { shard_node=$i; break; }
done
cpsql "${shard_node:-1}" >/dev/null 2>&1 <<'SQL'
SET citus.enable_ddl_propagation = off;
CREATE SCHEMA owners_ops;
CREATE FUNCTION owners_ops.texteq(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'the database owner''s operator was evaluated as %', current_user; END $$;
CREATE OPERATOR owners_ops.= (LEFTARG = text, RIGHTARG = text, FUNCTION = owners_ops.texteq);
SQL
check "the funnel trigger on a shard evaluates no operator of the writing session's search_path" \
	is "$(cpsql "${shard_node:-1}" -At 2>&1 <<SQL
BEGIN;
SET LOCAL search_path = owners_ops, pg_catalog;
DELETE FROM revenue_engine.${shard:-none} WHERE ctid = (SELECT ctid FROM revenue_engine.${shard:-none} LIMIT 1);
ROLLBACK;
SELECT 'deleted';
SQL
)" "deleted"

# ---------------------------------------------------------------------------
echo "== 6. a drip campaign through the tenant-first functions"
# Three contacts of initech, a campaign of two sends a day apart on an SMS
# channel, enrolled through the distributed functions (each runs on
# initech's node).  The step runner of that node's worker (it scans its own
# shards) sends the first step; one contact replies (an inbound message:
# stop on reply); the others' second step is made due and sent; the one who
# replied gets nothing more.
cpsql 0 >/dev/null <<SQL
SET revenue_engine.tenant = 'initech';
SELECT revenue_engine.create_channel('drip', '$RX/v19.0/2/messages',
         body_template => '{"messaging_product": "whatsapp"}', message_id_path => '{messages,0,id}',
         retry_schedule => '{1 second,1 second,1 second}');
SELECT revenue_engine.set_channel_kind('drip', 'sms');
SQL
check "contacts, consent, templates and an active campaign through the distributed tenant-first functions" \
	is "$(cpsql 0 -At 2>&1 <<'SQL'
SELECT revenue_engine.upsert_contact('initech', ref, phone, NULL, name, 'Europe/Berlin', NULL, NULL, NULL, NULL) > 0
  FROM (VALUES ('ann', '+15557000001', 'Ann Lee'), ('bob', '+15557000002', 'Bob Ray'), ('cyd', '+15557000003', 'Cyd Poe')) v(ref, phone, name);
SELECT bool_and(revenue_engine.set_consent('initech', ref, 'sms', 'marketing', true, 'test') IS NOT NULL)
  FROM (VALUES ('ann'), ('bob'), ('cyd')) v(ref);
SELECT revenue_engine.create_template('initech', 'welcome', 'Hi {{first_name|there}}', NULL, NULL, NULL);
SELECT revenue_engine.create_template('initech', 'again', 'Still there, {{first_name|there}}?', NULL, NULL, NULL);
SELECT revenue_engine.create_campaign('initech', 'drip', 'drip',
         '[{"kind": "send", "template": "welcome"}, {"kind": "wait", "amount": 1, "unit": "days"},
           {"kind": "send", "template": "again"}]', '{"purpose": "marketing"}') > 0;
SELECT revenue_engine.activate_campaign('initech', 'drip');
SQL
)" "$(printf 't\nt\nt\nt\n1\n1\nt\n1')"
check "enroll(tenant, ...) enrolls each contact once (a second call returns the open enrollment)" \
	is "$(cpsql 0 -At -c "SELECT count(DISTINCT revenue_engine.enroll('initech', 'drip', ref, '{}', NULL))
	                        FROM (VALUES ('ann'), ('bob'), ('cyd'), ('ann'), ('bob')) v(ref)" 2>&1)" "3"
rx_count() {	# rx_count PHONE TEXT-PREFIX: POSTs of the drip channel to that phone
	python3 -c "
import json, sys
n = 0
for l in open('$WORK/rx.jsonl'):
    r = json.loads(l)
    if r['path'] != '/v19.0/2/messages': continue
    b = json.loads(r['body'])
    if b.get('to') == sys.argv[1] and b.get('text', '').startswith(sys.argv[2]): n += 1
print(n)" "$@"
}
for _ in $(seq 120); do
	[ "$(rx_count +15557000001 'Hi Ann')$(rx_count +15557000002 'Hi Bob')$(rx_count +15557000003 'Hi Cyd')" = 111 ] && break
	sleep 0.5
done
check "the first step reached the receiver once per contact, rendered" \
	is "$(rx_count +15557000001 'Hi Ann') $(rx_count +15557000002 'Hi Bob') $(rx_count +15557000003 'Hi Cyd')" "1 1 1"
holder=$(cpsql 0 -Atc "SELECT n.groupid FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
                        WHERE s.logicalrelid = 'revenue_engine.sends'::regclass
                          AND s.shardid = get_shard_id_for_distribution_column('revenue_engine.sends', 'initech')")
check "the sends were queued by the worker of the node holding the tenant (ids from its range)" \
	is "$(cpsql 0 -Atc "SELECT count(*) FILTER (WHERE (id >> 48) = ${holder:-0}) || '/' || count(*)
	                     FROM revenue_engine.sends WHERE tenant_id = 'initech'")" "3/3"
check "the enrollments wait for their second step, a day later" \
	is "$(cpsql 0 -Atc "SELECT string_agg(status || ':' || step || ':' || (next_run_at > now() + interval '23 hours'), ',')
	                     FROM revenue_engine.enrollments WHERE tenant_id = 'initech'")" "active:3:true,active:3:true,active:3:true"
check "Ann's reply (record_inbound_message(tenant, ...)) stops her enrollment" \
	is "$(cpsql 0 -At -c "SELECT revenue_engine.record_inbound_message('initech', '+15557000001', now(), 'manual', NULL) IS NULL" \
	        -c "SELECT e.status || ':' || e.end_reason FROM revenue_engine.enrollments e JOIN revenue_engine.contacts c
	              ON c.tenant_id = e.tenant_id AND c.id = e.contact_id WHERE e.tenant_id = 'initech' AND c.external_ref = 'ann'" 2>&1)" \
	"$(printf 't\nexited:replied')"
cpsql 0 -c "UPDATE revenue_engine.enrollments SET next_run_at = now() WHERE tenant_id = 'initech' AND next_run_at IS NOT NULL" >/dev/null
for _ in $(seq 120); do
	[ "$(rx_count +15557000002 'Still there, Bob?')$(rx_count +15557000003 'Still there, Cyd?')" = 11 ] && break
	sleep 0.5
done
sleep 2	# anything sent to Ann would have arrived by now
check "the second step reached Bob and Cyd, nothing more reached Ann" \
	is "$(rx_count +15557000001 '') $(rx_count +15557000002 'Still there, Bob?') $(rx_count +15557000003 'Still there, Cyd?')" "1 1 1"
# (in the order of the events' names: the rows' ids come from the sequence
# range of the node that wrote them, an enroll() inside a query runs on the
# coordinator)
check "the enrollments' history: enrolled, sent, waiting, sent, completed; Ann's exited on her reply" \
	is "$(cpsql 0 -Atc "SELECT c.external_ref || ' ' || string_agg(h.event, ',' ORDER BY h.event)
	                     FROM revenue_engine.enrollment_history h
	                     JOIN revenue_engine.enrollments e ON e.tenant_id = h.tenant_id AND e.id = h.enrollment_id
	                     JOIN revenue_engine.contacts c ON c.tenant_id = e.tenant_id AND c.id = e.contact_id
	                    WHERE h.tenant_id = 'initech' GROUP BY c.external_ref ORDER BY 1")" \
	"$(printf 'ann enrolled,exited,sent,waiting\nbob completed,enrolled,sent,sent,waiting\ncyd completed,enrolled,sent,sent,waiting')"
check "campaign_funnel (counters kept by the triggers on the shards) equals a scan" \
	is "$(cpsql 0 -Atc "SET revenue_engine.tenant = 'initech'" -c "SELECT enrolled || ' ' || sent || ' ' || exited || ' ' || completed FROM revenue_engine.campaign_funnel WHERE campaign = 'drip'")" \
	"$(cpsql 0 -Atc "SELECT count(*) || ' ' || (SELECT count(*) FROM revenue_engine.campaign_messages WHERE tenant_id = 'initech' AND sent_at IS NOT NULL)
	                       || ' ' || count(*) FILTER (WHERE status = 'exited') || ' ' || count(*) FILTER (WHERE status = 'completed')
	                  FROM revenue_engine.enrollments WHERE tenant_id = 'initech'")"
check "the coordinator's worker ran no campaign step (it holds no shard)" \
	is "$(cpsql 0 -Atc "SELECT count(*) FROM revenue_engine.enrollment_history WHERE tenant_id = 'initech' AND event IN ('sent', 'waiting', 'completed') AND (id >> 48) <> ${holder:-0}")" "0"

# ---------------------------------------------------------------------------
echo "== 5. the servers' logs"
check "no worker exited and no server process crashed on any node" \
	is "$(cat "${CITUS_DIRS[@]/%//server.log}" | grep -cE 'terminated by signal|exited with exit code|server process .* was terminated|revenue_engine.*(worker|delivery).*(exit|stopp)')" "0"
grep -hE 'terminated by signal|exited with exit code|server process .* was terminated|revenue_engine.*(worker|delivery).*(exit|stopp)' \
	"${CITUS_DIRS[@]/%//server.log}" | head -5 | sed 's/^/#   /'
check "no ERROR in the delivery workers of any node" \
	is "$(cat "${CITUS_DIRS[@]/%//server.log}" | grep -B0 -A3 'ERROR' | grep -c 'revenue_engine worker')" "0"
grep -h -A3 ERROR "${CITUS_DIRS[@]/%//server.log}" | grep -B3 'revenue_engine worker' | head -12 | sed 's/^/#   /'

finish
