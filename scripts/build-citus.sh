#!/usr/bin/env bash
# Builds the PostgreSQL 15 that the Citus test runs: a relocated copy of
# Debian's PostgreSQL 15 (PostgreSQL finds its directories relative to bin/)
# in a cache directory outside the checkout, with Citus 13.2.2 from
# ../shared/vendor installed into it.  Once per machine; later runs reuse it.
# The system's PostgreSQL is never touched.  Prints the copy's pg_config on
# its last line; exits 3 (with a message) when ../shared/vendor is absent.
#   RE_PG_CACHE  where the builds live (default /var/cache/revenue_engine)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENDOR="${RE_VENDOR:-$ROOT/../shared/vendor}"
CACHE="${RE_PG_CACHE:-/var/cache/revenue_engine}"
PREFIX="$CACHE/pg-15-citus"
PGC="$PREFIX/lib/postgresql/15/bin/pg_config"
TARBALL="$VENDOR/citus-13.2.2.tar.gz"

if [ -x "$PGC" ] && [ -f "$PREFIX/.complete" ]; then
	echo "$PGC"
	exit 0
fi
if [ ! -f "$TARBALL" ]; then
	echo "build-citus.sh: $TARBALL is absent (../shared/vendor holds the test-only Citus sources)" >&2
	exit 3
fi
if [ "$(id -u)" != 0 ]; then
	echo "build-citus.sh: $PREFIX is not built yet; run as root once" >&2
	exit 1
fi

need=()
for p in postgresql-15 postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev gcc make patch; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

rm -rf "$PREFIX"
mkdir -p "$PREFIX/lib/postgresql" "$PREFIX/share/postgresql" "$PREFIX/include"
cp -a /usr/lib/postgresql/15 "$PREFIX/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$PREFIX/share/postgresql/"
cp -a /usr/include/postgresql "$PREFIX/include/"

SRC="$CACHE/src-citus-13.2.2"
rm -rf "$SRC"
mkdir -p "$SRC"
tar -xzf "$TARBALL" -C "$SRC"
cd "$SRC"/citus-13.2.2* 2>/dev/null || cd "$SRC"/*
{
	./configure --without-libcurl PG_CONFIG="$PGC"
	# 15.20 and later export have_createdb_privilege(), which Citus 13.2.2 also defines
	make -j2 with_llvm=no || { patch -p0 <"$VENDOR/citus-pg15.20-have_createdb_privilege.patch" && make -j2 with_llvm=no; }
	make install with_llvm=no
} >"$SRC/build.log" 2>&1 || { tail -40 "$SRC/build.log" >&2; exit 1; }
chmod -R a+rX "$PREFIX"
touch "$PREFIX/.complete"
echo "$PGC"
