#!/bin/sh
# Builds a Debian package of c8y-tunnel with dpkg-deb (no debhelper needed).
#
#   scripts/build-deb.sh ARCH BINARY OUTDIR
#     ARCH    amd64 | arm64 (Debian names; x86_64/aarch64 are accepted)
#     BINARY  the compiled c8y-tunnel for that architecture
#     OUTDIR  where c8y-tunnel_<version>_<arch>.deb is written
#
# The version comes from deno.json, or VERSION=1.2.3 (a leading "v" is
# dropped, so VERSION=${GITHUB_REF_NAME} works for tags). The package holds
#   /usr/bin/c8y-tunnel, /lib/systemd/system/c8y-tunnel.service,
#   /etc/c8y-tunnel/config.toml (a conffile: upgrades keep local edits)
# and maintainer scripts that run `c8y-tunnel init --daemon` and enable the
# service on install, and stop it and run `c8y-tunnel cleanup` on removal.
set -eu

die() {
	printf 'build-deb.sh: error: %s\n' "$*" >&2
	exit 1
}

[ $# -eq 3 ] || die "usage: scripts/build-deb.sh ARCH BINARY OUTDIR (ARCH: amd64 or arm64)"
arch=$1
binary=$2
outdir=$3

case $arch in
amd64 | x86_64) arch=amd64 ;;
arm64 | aarch64) arch=arm64 ;;
armhf | armel | armv7*)
	die "ARCH $arch: Deno has no 32-bit ARM target, so there is no binary to package (see docs/install.md)"
	;;
*) die "ARCH $arch is not supported: expected amd64 or arm64" ;;
esac
[ -f "$binary" ] || die "BINARY $binary does not exist: build it with 'deno run -A scripts/compile.ts'"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is not installed (apt-get install dpkg)"

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
version=${VERSION:-}
if [ -z "$version" ]; then
	version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$repo/deno.json" | head -n 1)
fi
version=${version#v}
# Debian versions sort "~" before anything: 1.0.0-rc.1 becomes 1.0.0~rc.1.
version=$(printf '%s' "$version" | sed 's/-/~/')
printf '%s' "$version" | grep -Eq '^[0-9][A-Za-z0-9.+~]*$' ||
	die "version '$version' is not a Debian version: set VERSION=1.2.3"

mkdir -p "$outdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
pkg=$work/pkg

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" \
	"$pkg/etc/c8y-tunnel" "$pkg/usr/share/doc/c8y-tunnel"
install -m 0755 "$binary" "$pkg/usr/bin/c8y-tunnel"
install -m 0644 "$repo/install/c8y-tunnel.service" "$pkg/lib/systemd/system/c8y-tunnel.service"
install -m 0644 "$repo/install/config.toml" "$pkg/etc/c8y-tunnel/config.toml"
install -m 0644 "$repo/docs/install.md" "$pkg/usr/share/doc/c8y-tunnel/install.md"
install -m 0644 "$repo/docs/config.md" "$pkg/usr/share/doc/c8y-tunnel/config.md"

installed_kib=$(du -k -s "$pkg" | cut -f 1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: c8y-tunnel
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-c8y-tunnel developers <c8y-tunnel@localhost>}
Installed-Size: $installed_kib
Depends: libc6
Recommends: tedge
Section: net
Priority: optional
Description: Cumulocity Cloud Remote Access agent for thin-edge.io devices
 c8y-tunnel listens on the device's MQTT broker for c8y_RemoteAccessConnect
 operations and tunnels SSH, VNC, Telnet or any TCP service of the device's
 network to Cumulocity, within an allowlist of targets. A drop-in
 alternative to thin-edge's c8y-remote-access-plugin, running as the
 c8y-tunnel systemd service.
EOF

printf '/etc/c8y-tunnel/config.toml\n' >"$pkg/DEBIAN/conffiles"

cat >"$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
	# The service runs as tedge; the config may hold a proxy password.
	if getent group tedge >/dev/null 2>&1; then
		chgrp tedge /etc/c8y-tunnel/config.toml
		chmod 0640 /etc/c8y-tunnel/config.toml
		# Where `connect` (run by the mapper as tedge) may keep its log (log.file).
		install -d -m 0750 -o tedge -g tedge /var/log/c8y-tunnel
	else
		echo "c8y-tunnel: user tedge does not exist: install thin-edge.io, or set User= and Group= with 'systemctl edit c8y-tunnel'" >&2
	fi
	# Announce the operation to thin-edge (operation file without [exec]).
	if ! /usr/bin/c8y-tunnel init --daemon; then
		echo "c8y-tunnel: 'c8y-tunnel init --daemon' failed: fix the cause, run it again, then 'systemctl restart c8y-tunnel'" >&2
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
		systemctl enable c8y-tunnel.service >/dev/null || true
		systemctl restart c8y-tunnel.service || true
	elif command -v systemctl >/dev/null 2>&1; then
		systemctl enable c8y-tunnel.service >/dev/null 2>&1 || true
	fi
fi
exit 0
EOF

cat >"$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl stop c8y-tunnel.service || true
fi
if [ "$1" = remove ]; then
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable c8y-tunnel.service >/dev/null 2>&1 || true
	fi
	# Withdraw the operation from thin-edge (not on upgrade: postinst re-inits).
	/usr/bin/c8y-tunnel cleanup ||
		echo "c8y-tunnel: 'c8y-tunnel cleanup' failed: remove /etc/tedge/operations/c8y/c8y_RemoteAccessConnect by hand" >&2
fi
exit 0
EOF

cat >"$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
if [ "$1" = purge ]; then
	rmdir /etc/c8y-tunnel 2>/dev/null || true
fi
exit 0
EOF

chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"
chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles"

deb=$outdir/c8y-tunnel_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
