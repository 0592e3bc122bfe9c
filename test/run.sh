#!/usr/bin/env bash
# Runs every test of revenue_engine on every supported PostgreSQL major:
# pg_regress (sql/, expected/) and the isolation tester (test/specs/) through
# `make installcheck` against a throwaway server started with test/test.conf,
# and TAP (test/t/) through PGXS's prove_installcheck, all run by the
# postgres OS user.  Ends with "N passed, N failed" over all majors; exits
# non-zero on any failure.
#
#   bash test/run.sh [regress|isolation|tap|citus ...]
#
# citus (test/citus/run.sh) runs once, with the PostgreSQL 15 it builds with
# Citus, when 15 is among the majors tested.
#
# RE_PG_MAJORS   the majors to test (default "15 17 18"): 15 is Debian's
#                package, the others are built once per machine by
#                scripts/build-pg.sh into its cache (RE_PG_CACHE); an entry
#                may also be the path of a pg_config.
# PG_CONFIG      set: test that PostgreSQL only (RE_PG_MAJORS is ignored).
# RE_PG_JOBS     majors tested at the same time (default: all of them; each
#                builds and installs from its own copy of the tree, and its
#                output is printed when it is done).  The tests mostly wait
#                (workers, receivers, timeouts): on 2 cores three majors at
#                once took 4.3 min, one after the other 11.5 min.
# RE_TAP_TESTS   TAP files to run (default test/t/*.pl).
# RE_SKIP_BUILD  set: test the build already installed.
# RE_KEEP_WORK   set: keep the work directory (trees, results, logs).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GIVEN_PG_CONFIG="${PG_CONFIG:-}"
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(regress isolation tap citus)

# A suite listed here runs on that major only (when it is tested), the
# others on every major.
declare -A ONLY_ON=([citus]=15)

bash "$ROOT/scripts/install-deps.sh" || exit 1
# the tests build with warnings as errors (users' builds only warn)
export RE_WERROR="${RE_WERROR:-yes}"
source "$ROOT/test/lib/cluster.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/revenue_engine_test.XXXXXX")
if [ -n "${RE_KEEP_WORK:-}" ]; then
	echo "(keeping $WORK: each major's tree with results/, output_iso/, tmp_check/ and logs)"
else
	trap 'rm -rf "$WORK"' EXIT
fi
chmod 755 "$WORK"

# The pg_config of a major: Debian's for 15, else the cached source build.
pg_config_of() {
	case "$1" in
	*/*) echo "$1" ;;
	15) echo /usr/lib/postgresql/15/bin/pg_config ;;
	*) bash "$ROOT/scripts/build-pg.sh" "$1" | tail -1 ;;
	esac
}

major_of() {				# pg_config -> major version number
	"$1" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p'
}

# Counting: each major writes "passed failed" to $WORK/<label>.count.
count_regress() {			# log file, exit status -> adds to passed/failed
	local ok bad
	# "test x ... ok" (15), "ok 1 - x" (16 and later)
	ok=$(grep -cE '\.\.\. +ok|^ok +[0-9]+ ' "$1")
	bad=$(grep -cE '\.\.\. +FAILED|^not ok +[0-9]+ ' "$1")
	# a run that failed without a failed test (server crash, setup error) counts once
	[ "$2" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
	passed=$((passed + ok)); failed=$((failed + bad))
}

count_tap() {				# prove's log -> adds to passed/failed
	local tests bad died
	tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$1")
	bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$1" | awk -F'[ /]' '{s+=$2} END {print s+0}')
	# a script that died before its plan counts as one failure
	died=$(grep -cE 'Non-zero (exit|wait) status|No subtests run|Bad plan' "$1")
	tests=${tests:-0}
	passed=$((passed + tests - bad)); failed=$((failed + bad + died))
	grep -q '^Result: PASS' "$1" || [ "$died" -gt 0 ] || [ "$bad" -gt 0 ] || failed=$((failed + 1))
}

# make in a major's tree as postgres, for that major's PostgreSQL
tree_make() {
	local env=()
	[ -n "$server_up" ] && env=(PGHOST="$PGHOST" PGPORT="$PGPORT")
	as_postgres env "${env[@]}" make -C "$TREE" -s PG_CONFIG="$PG_CONFIG" "$@"
}

suite_regress() {
	echo "== pg_regress (make installcheck)"
	tree_make installcheck ISOLATION= TAP_TESTS= 2>&1 | tee "$DIR/regress.log"
	count_regress "$DIR/regress.log" "${PIPESTATUS[0]}"
	[ -s "$TREE/regression.diffs" ] && cat "$TREE/regression.diffs"
}

suite_isolation() {
	echo "== isolation (make installcheck)"
	tree_make installcheck REGRESS= TAP_TESTS= 2>&1 | tee "$DIR/isolation.log"
	count_regress "$DIR/isolation.log" "${PIPESTATUS[0]}"
	[ -s "$TREE/test/output_iso/regression.diffs" ] && cat "$TREE/test/output_iso/regression.diffs"
}

suite_tap() {
	echo "== TAP (prove_installcheck)"
	tree_make installcheck REGRESS= ISOLATION= PROVE_TESTS="${RE_TAP_TESTS:-test/t/*.pl}" \
		2>&1 | tee "$DIR/tap.log"
	count_tap "$DIR/tap.log"
}

suite_citus() {
	# once, on the PostgreSQL 15 copy it builds with Citus (test/citus/run.sh;
	# from the checkout: it finds ../shared/vendor beside it)
	echo "== Citus"
	bash "$ROOT/test/citus/run.sh" 2>&1 | tee "$DIR/citus.log"
	local ok bad
	ok=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$DIR/citus.log" | tail -1)
	bad=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$DIR/citus.log" | tail -1)
	passed=$((passed + ${ok:-0})); failed=$((failed + ${bad:-1}))
}

# The server regress and isolation run against: test/test.conf's settings.
server_up=
server_start() {
	[ -n "$server_up" ] && return 0
	local port
	port=$(re_free_port)
	re_cluster_start "$DIR/server" "$port" "include '$TREE/test/test.conf'" || return 1
	export PGHOST="$DIR/server" PGPORT="$port"
	server_up=1
}

# test_major LABEL PG_CONFIG: build, install and run the suites; writes
# $WORK/LABEL.count.  Runs in a subshell of its own.
test_major() {
	local suite
	LABEL="$1"
	export PG_CONFIG="$2"
	PGBIN=$($PG_CONFIG --bindir)
	DIR="$WORK/$LABEL"
	TREE="$DIR/tree"
	passed=0
	failed=0
	trap '[ -n "$server_up" ] && re_cluster_stop "$DIR/server"; echo "$passed $failed" >"$WORK/$LABEL.count"' EXIT

	echo "=== PostgreSQL $LABEL: $($PG_CONFIG --version) ($PG_CONFIG)"
	mkdir -p "$DIR"
	# The tests write results next to their inputs: work on a copy postgres owns.
	cp -a "$ROOT/." "$TREE"
	rm -rf "$TREE/.git"
	echo "== build and install"
	if [ -n "${RE_SKIP_BUILD:-}" ]; then
		echo "(skipped: RE_SKIP_BUILD is set; testing the installed build)"
	elif ! make -C "$TREE" -s clean >/dev/null || ! make -C "$TREE" -s all >"$DIR/build.log" 2>&1 ||
		! make -C "$TREE" -s install >>"$DIR/build.log" 2>&1; then
		cat "$DIR/build.log"
		failed=1
		exit 1
	fi
	[ "$(id -u)" = 0 ] && chown -R postgres: "$DIR"

	for suite in "${SUITES[@]}"; do
		if [ -n "${ONLY_ON[$suite]:-}" ] && [ "${ONLY_ON[$suite]}" != "$LABEL" ]; then
			continue
		fi
		if ! declare -F "suite_$suite" >/dev/null; then
			echo "unknown suite $suite" >&2
			failed=$((failed + 1))
			continue
		fi
		case "$suite" in
		regress | isolation) server_start || { failed=$((failed + 1)); continue; } ;;
		esac
		"suite_$suite"
	done
	echo "=== PostgreSQL $LABEL: $passed passed, $failed failed"
}

# What to test: PG_CONFIG's PostgreSQL, or every major of RE_PG_MAJORS.
LABELS=()
declare -A CONFIGS=()
if [ -n "$GIVEN_PG_CONFIG" ]; then
	m=$(major_of "$GIVEN_PG_CONFIG")
	LABELS=("$m"); CONFIGS[$m]="$GIVEN_PG_CONFIG"
else
	for want in ${RE_PG_MAJORS:-15 17 18}; do
		echo "== PostgreSQL $want"
		if ! pc=$(pg_config_of "$want") || [ ! -x "$pc" ]; then
			echo "no PostgreSQL $want: scripts/build-pg.sh $want failed"
			echo "0 passed, 1 failed"
			exit 1
		fi
		m=$(major_of "$pc")
		LABELS+=("$m"); CONFIGS[$m]="$pc"
	done
fi

jobs=${RE_PG_JOBS:-${#LABELS[@]}}
[ "$jobs" -gt 1 ] && echo "(testing ${#LABELS[@]} majors, $jobs at a time: each one's output follows when it is done)"
running=0
for m in "${LABELS[@]}"; do
	if [ "$jobs" -le 1 ]; then
		(test_major "$m" "${CONFIGS[$m]}")
	else
		(test_major "$m" "${CONFIGS[$m]}") >"$WORK/$m.out" 2>&1 &
		running=$((running + 1))
		if [ "$running" -ge "$jobs" ]; then
			wait -n
			running=$((running - 1))
		fi
	fi
done
wait
passed=0
failed=0
for m in "${LABELS[@]}"; do
	[ "$jobs" -gt 1 ] && cat "$WORK/$m.out"
	if [ -f "$WORK/$m.count" ]; then
		read -r p f <"$WORK/$m.count"
		passed=$((passed + p)); failed=$((failed + f))
	else
		failed=$((failed + 1))
	fi
done
[ ${#LABELS[@]} -gt 1 ] && for m in "${LABELS[@]}"; do
	[ -f "$WORK/$m.count" ] && read -r p f <"$WORK/$m.count" && echo "PostgreSQL $m: $p passed, $f failed"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
