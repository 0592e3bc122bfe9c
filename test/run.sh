#!/usr/bin/env bash
# Runs every test of revenue_engine: pg_regress (sql/, expected/), the
# isolation tester (test/specs/) and TAP (test/t/), each on throwaway clusters
# run by the postgres OS user.  Ends with "N passed, N failed"; exits non-zero
# on any failure.  Usage: bash test/run.sh [regress|isolation|tap ...]
# RE_SKIP_BUILD=1 tests the build already installed; RE_TAP_TESTS picks TAP
# files; RE_KEEP_WORK=1 keeps the work copy with its results and logs.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUITES=("$@")
[ ${#SUITES[@]} -eq 0 ] && SUITES=(regress isolation tap citus)

bash "$ROOT/scripts/install-deps.sh" || exit 1
# the tests build with warnings as errors (users' builds only warn)
export RE_WERROR="${RE_WERROR:-yes}"
source "$ROOT/test/lib/cluster.sh"
PGXS_DIR=$(dirname "$($PG_CONFIG --pgxs)")/..

echo "== build and install"
if [ -n "${RE_SKIP_BUILD:-}" ]; then
	echo "(skipped: RE_SKIP_BUILD is set; testing the installed build)"
elif ! make -C "$ROOT" -s clean >/dev/null || ! make -C "$ROOT" -s all >/tmp/re_build.log 2>&1 || ! make -C "$ROOT" -s install >>/tmp/re_build.log 2>&1; then
	cat /tmp/re_build.log
	echo "0 passed, 1 failed"
	exit 1
fi

# The tests write results next to their inputs: work on a copy postgres owns.
WORK=$(mktemp -d /tmp/revenue_engine_test.XXXXXX)
if [ -n "${RE_KEEP_WORK:-}" ]; then
	echo "(keeping $WORK: results/, output_iso/, tmp_check/ logs)"
else
	trap 'rm -rf "$WORK"' EXIT
fi
cp -a "$ROOT/." "$WORK/tree"
rm -rf "$WORK/tree/.git"
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK"
cd "$WORK/tree"

REGRESS=$(make -s print-REGRESS)
ISOLATION=$(make -s print-ISOLATION)

passed=0
failed=0

count_regress() {			# log file, exit status -> adds to passed/failed
	local ok bad
	ok=$(grep -cE '\.\.\. +ok' "$1")
	bad=$(grep -cE '\.\.\. +FAILED' "$1")
	# a run that failed without a failed test (server crash, setup error) counts once
	[ "$2" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
	passed=$((passed + ok)); failed=$((failed + bad))
}

for suite in "${SUITES[@]}"; do
	case "$suite" in
	regress)
		echo "== pg_regress"
		as_postgres "$PGXS_DIR/test/regress/pg_regress" \
			--temp-instance="$WORK/tmp_regress" --temp-config=test/test.conf \
			--port="$(re_free_port)" --bindir="$PGBIN" \
			--inputdir=. --outputdir=. $REGRESS 2>&1 | tee "$WORK/regress.log"
		count_regress "$WORK/regress.log" "${PIPESTATUS[0]}"
		[ -s regression.diffs ] && cat regression.diffs
		;;
	isolation)
		echo "== isolation"
		as_postgres "$PGXS_DIR/test/isolation/pg_isolation_regress" \
			--temp-instance="$WORK/tmp_isolation" --temp-config=test/test.conf \
			--port="$(re_free_port)" --bindir="$PGBIN" \
			--inputdir=test --outputdir=output_iso $ISOLATION 2>&1 | tee "$WORK/isolation.log"
		count_regress "$WORK/isolation.log" "${PIPESTATUS[0]}"
		[ -s output_iso/regression.diffs ] && cat output_iso/regression.diffs
		;;
	tap)
		echo "== TAP"
		as_postgres env TESTDIR="$WORK/tree" PG_REGRESS="$PGXS_DIR/test/regress/pg_regress" \
			prove -I "$PGXS_DIR/test/perl" ${RE_TAP_TESTS:-test/t/*.pl} 2>&1 | tee "$WORK/tap.log"
		tests=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$WORK/tap.log")
		bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$WORK/tap.log" | awk -F'[ /]' '{s+=$2} END {print s+0}')
		# a script that died before its plan counts as one failure
		died=$(grep -cE 'Non-zero (exit|wait) status|No subtests run|Bad plan' "$WORK/tap.log")
		tests=${tests:-0}
		passed=$((passed + tests - bad)); failed=$((failed + bad + died))
		grep -q '^Result: PASS' "$WORK/tap.log" || [ "$died" -gt 0 ] || [ "$bad" -gt 0 ] || failed=$((failed + 1))
		;;
	citus)
		# once, on the PostgreSQL 15 copy it builds with Citus (test/citus/run.sh)
		echo "== Citus"
		bash "$ROOT/test/citus/run.sh" 2>&1 | tee "$WORK/citus.log"
		ok=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$WORK/citus.log" | tail -1)
		bad=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$WORK/citus.log" | tail -1)
		passed=$((passed + ${ok:-0})); failed=$((failed + ${bad:-1}))
		;;
	*)
		echo "unknown suite $suite" >&2; failed=$((failed + 1)) ;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
