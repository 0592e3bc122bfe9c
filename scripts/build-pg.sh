#!/usr/bin/env bash
# Builds PostgreSQL MAJOR (17 or 18) from Debian's own source package into a
# cache directory outside the checkout, once per machine; later runs reuse it.
# Prints the pg_config of the build on its last line.
#   usage: bash scripts/build-pg.sh 17|18
#   RE_PG_CACHE  where the builds live (default /var/cache/revenue_engine)
# Debian 12 packages only PostgreSQL 15; 17 comes from trixie's source package
# and 18 from sid's (a deb-src entry only: no binary package changes suite).
set -euo pipefail

MAJOR="${1:?usage: build-pg.sh 17|18}"
CACHE="${RE_PG_CACHE:-/var/cache/revenue_engine}"
PREFIX="$CACHE/pg-$MAJOR"
case "$MAJOR" in
17) SUITE=trixie ;;
18) SUITE=sid ;;
*) echo "build-pg.sh: PostgreSQL $MAJOR is not built from source here (15 is Debian's package)" >&2; exit 2 ;;
esac

# The time zone database is the machine's (/usr/share/zoneinfo, Debian's
# tzdata), as Debian's own PostgreSQL 15 uses: every major then sees the same
# zones and transitions (the send-time property test depends on it).  A build
# made with other options is made again.
CONFIGURE=(--prefix="$PREFIX" --without-icu --without-readline --without-llvm
	--with-openssl --enable-tap-tests --enable-debug --with-system-tzdata=/usr/share/zoneinfo)
if [ -x "$PREFIX/bin/pg_config" ] && [ "$(cat "$PREFIX/.complete" 2>/dev/null)" = "${CONFIGURE[*]}" ]; then
	echo "$PREFIX/bin/pg_config"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "build-pg.sh: PostgreSQL $MAJOR is not built yet in $PREFIX; run as root once" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
LIST=/etc/apt/sources.list.d/revenue-engine-src.sources
want="Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
if [ "$(cat "$LIST" 2>/dev/null)" != "$want" ]; then
	echo "$want" >"$LIST"
	apt-get update -qq >&2
fi
need=()
for p in bison flex curl tzdata dpkg-dev libssl-dev zlib1g-dev libipc-run-perl gcc make; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

SRC="$CACHE/src-$MAJOR"
rm -rf "$SRC" "$PREFIX"
mkdir -p "$SRC"
cd "$SRC"
# Upstream's own sources: the source package's .orig tarball, without
# Debian's patches (they move pkglibdir to /usr/lib/postgresql/N/lib, outside
# the prefix).  A mirror may lag its own index (seen: the index named 17.12
# while the pool held 17.9 to 17.11): then the newest earlier minor of the
# same Debian revision that the pool holds is fetched.
from_pool() {
	local index minor rev v base
	index=$(apt-cache showsrc "postgresql-$MAJOR" | sed -n 's/^Version: //p' | sort -V | tail -1)
	minor=${index#*.}; minor=${minor%%-*}
	rev=${index#*-}
	base="http://deb.debian.org/debian/pool/main/p/postgresql-$MAJOR"
	for ((m = minor; m >= 0; m--)); do
		v="$MAJOR.$m"
		if curl -sf -m 600 -o "postgresql-${MAJOR}_$v.orig.tar.bz2" "$base/postgresql-${MAJOR}_$v.orig.tar.bz2"; then
			echo "(the mirror lacks $index: building $v)"
			return 0
		fi
	done
	return 1
}
apt-get source -qq --download-only --only-source "postgresql-$MAJOR/$SUITE" >"$SRC/apt-source.log" 2>&1 ||
	from_pool >>"$SRC/apt-source.log" 2>&1 ||
	{ cat "$SRC/apt-source.log" >&2; exit 1; }
orig=$(ls "$SRC"/postgresql-"${MAJOR}"_*.orig.tar.bz2 | head -1)
tar -xjf "$orig"
dir=$(find "$SRC" -maxdepth 1 -type d -name "postgresql-$MAJOR.*" | head -1)
cd "$dir"
LOG="$SRC/build.log"
echo "building PostgreSQL $MAJOR from $(basename "$dir") into $PREFIX (log: $LOG)" >&2
{
	./configure "${CONFIGURE[@]}" &&
	make -j"$(nproc)" -s &&
	make -s install &&
	make -C contrib -j"$(nproc)" -s install &&
	make -C src/test/isolation -s install
} >"$LOG" 2>&1 || { tail -50 "$LOG" >&2; exit 1; }
# postgres (the OS user that runs the tests) reads it; the sources are not kept
chmod -R a+rX "$PREFIX"
rm -rf "$SRC"
echo "${CONFIGURE[*]}" >"$PREFIX/.complete"
echo "$PREFIX/bin/pg_config"
