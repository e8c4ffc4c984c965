#!/bin/sh
# Install hwsigner (signerd, signerctl) for systemd on a bare-metal host.
#
#   sudo ./install.sh                          # from an unpacked dist tarball
#   sudo systemd/install.sh                    # from a checkout with bin/ built
#   sudo ./install.sh --tarball hwsigner-VERSION-linux-amd64.tar.gz
#   ./install.sh --destdir /tmp/root --node node0   # stage into a root (tests, packaging)
#
# Options:
#   --prefix DIR     where bin/, lib/systemd/system, lib/sysusers.d, lib/tmpfiles.d
#                    and share/doc go (default /usr; /usr/local also works:
#                    systemd reads /usr/local/lib/systemd/system)
#   --destdir DIR    stage everything below DIR (also $DESTDIR); nothing is
#                    activated then: no user created, no daemon-reload
#   --tarball FILE   install from a dist tarball instead of this directory
#   --node NAME      also create /etc/signerd/NAME.yaml from the annotated
#                    example, unless it exists
#
# Idempotent: binaries, units and sysusers/tmpfiles entries are replaced (a
# running node keeps its old binary until restarted); a file in /etc/signerd
# is never overwritten. It never enables or starts a unit.
set -eu

prefix=/usr
destdir=${DESTDIR:-}
tarball=
node=

usage() { sed -n '2,22s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
	--prefix=*) prefix=${1#*=}; shift ;;
	--destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
	--destdir=*) destdir=${1#*=}; shift ;;
	--tarball) [ $# -ge 2 ] || die "--tarball needs a file"; tarball=$2; shift 2 ;;
	--tarball=*) tarball=${1#*=}; shift ;;
	--node) [ $# -ge 2 ] || die "--node needs a name"; node=$2; shift 2 ;;
	--node=*) node=${1#*=}; shift ;;
	-h | --help) usage 0 ;;
	*) echo "install.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
case $prefix in /*) ;; *) die "--prefix must be absolute, got $prefix" ;; esac
prefix=${prefix%/}
[ -n "$prefix" ] || die "--prefix must not be /"
case $node in *[!A-Za-z0-9_-]*) die "--node: letters, digits, _ and - only (a node_id), got $node" ;; esac

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "$tarball" ]; then
	[ -f "$tarball" ] || die "no such tarball: $tarball"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	tar -xzf "$tarball" -C "$tmp"
	top=$(find "$tmp" -mindepth 2 -maxdepth 2 -name install.sh -print | head -n 1)
	[ -n "$top" ] || die "$tarball has no install.sh at its top"
	set -- --prefix "$prefix" --destdir "$destdir"
	[ -z "$node" ] || set -- "$@" --node "$node"
	DESTDIR= sh "$top" "$@"
	exit
fi

# A dist tarball has bin/, systemd/, docs/ beside this script; a checkout
# has this script in systemd/ and bin/, docs/ one level up.
if [ -f "$here/systemd/signerd@.service" ]; then
	src=$here units=$here/systemd
elif [ -f "$here/signerd@.service" ]; then
	src=$(dirname "$here") units=$here
else
	die "cannot find signerd@.service beside $0"
fi
[ -x "$src/bin/signerd" ] || die "no $src/bin/signerd: unpack a dist tarball (make dist) or build: go build -trimpath -o bin/ ./cmd/signerd ./cmd/signerctl"

bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
docdir=$prefix/share/doc/hwsigner
confdir=/etc/signerd
root=${destdir%/}
is_root() { [ "$(id -u)" = 0 ]; }

say() { echo "  $*"; }

# put SRC DST MODE: replace DST atomically (a running binary is not
# overwritten in place: the new file is renamed over it).
put() {
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.new.$$"
	chmod "$3" "$2.new.$$"
	mv -f "$2.new.$$" "$2"
	say "$2"
}

# keep SRC DST MODE: a config file; an existing one is never touched.
keep() {
	if [ -e "$2" ] || [ -L "$2" ]; then
		say "$2 (exists, kept)"
		return
	fi
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.new.$$"
	chmod "$3" "$2.new.$$"
	if is_root && [ -z "$root" ] && getent group signerd >/dev/null 2>&1; then
		chown root:signerd "$2.new.$$"
	fi
	mv "$2.new.$$" "$2"
	say "$2 (new)"
}

echo "installing hwsigner into ${root:-/} (prefix $prefix)"
for b in signerd signerctl signer-relay; do
	[ -f "$src/bin/$b" ] || continue
	put "$src/bin/$b" "$root$bindir/$b" 0755
done

# Units: the ExecStart= and Documentation= paths follow --prefix.
unittmp=$(mktemp)
for u in "$units"/*.service; do
	[ -f "$u" ] || continue
	sed -e "/^ExecStart=/s|/usr/bin/|$bindir/|" \
		-e "/^Documentation=/s|/usr/share/doc/hwsigner/|$docdir/|" \
		"$u" >"$unittmp"
	put "$unittmp" "$root$unitdir/$(basename "$u")" 0644
done
rm -f "$unittmp"
put "$units/signerd.sysusers" "$root$prefix/lib/sysusers.d/signerd.conf" 0644
put "$units/signerd.tmpfiles" "$root$prefix/lib/tmpfiles.d/signerd.conf" 0644

for d in README.md docs/signerd.example.yaml docs/nats-server.conf.example; do
	[ -f "$src/$d" ] || continue
	put "$src/$d" "$root$docdir/$(basename "$d")" 0644
done

# /etc/signerd: 0750 root:signerd. The user and group come from sysusers,
# which only runs on the live system (no --destdir); tmpfiles fixes the
# owner at every boot anyway.
if [ -z "$root" ] && is_root; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers "$prefix/lib/sysusers.d/signerd.conf"
	elif ! getent passwd signerd >/dev/null 2>&1; then
		useradd --system --user-group --home-dir /var/lib/signerd --no-create-home --shell /usr/sbin/nologin signerd
	fi
fi
mkdir -p "$root$confdir"
chmod 0750 "$root$confdir"
if [ -z "$root" ] && is_root; then
	if command -v systemd-tmpfiles >/dev/null 2>&1; then
		systemd-tmpfiles --create "$prefix/lib/tmpfiles.d/signerd.conf"
	else
		chown root:signerd "$confdir"
		mkdir -p /var/lib/signerd && chown root:signerd /var/lib/signerd && chmod 0750 /var/lib/signerd
	fi
fi
say "$root$confdir (0750 root:signerd)"
if [ -f "$src/docs/signerd.example.yaml" ]; then
	keep "$src/docs/signerd.example.yaml" "$root$confdir/signerd.example.yaml" 0640
	[ -z "$node" ] || keep "$src/docs/signerd.example.yaml" "$root$confdir/$node.yaml" 0640
fi

if [ -z "$root" ] && is_root && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
fi

n=${node:-node0}
cat <<EOF

next steps (as root), for a node named $n:
  edit $confdir/$n.yaml                     (from $docdir/signerd.example.yaml)
  install -m 0600 PIN-FILE $confdir/$n.hsm-pin      (PKCS#11 nodes)
  install -m 0600 CREDS-FILE $confdir/$n.nats.creds
  systemctl enable --now signerd@$n         (or signerd-tpm@$n for a TPM 2.0 node)
  systemctl status signerd@$n; journalctl -u signerd@$n
EOF
