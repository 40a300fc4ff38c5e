#!/bin/sh
# Installs (or with --uninstall removes) c8y-tunnel on a thin-edge.io device.
# See docs/install.md. POSIX sh; run as root.
set -eu

usage() {
	cat <<'EOF'
Usage: install.sh [--binary FILE] [--prefix DIR] [--no-systemctl] [--no-init]
       install.sh --uninstall [--prefix DIR] [--no-systemctl]

Installs c8y-tunnel:
  /usr/bin/c8y-tunnel                         the binary (--binary FILE)
  /etc/c8y-tunnel/config.toml                 commented config, only if absent
  /etc/systemd/system/c8y-tunnel.service      the systemd unit, enabled
and runs `c8y-tunnel init --daemon` (thin-edge operation file, no [exec]).

  --binary FILE   binary to install; default: ./c8y-tunnel next to this script
                  or in the current directory, else
                  dist/c8y-tunnel-<arch>-unknown-linux-gnu of the checkout
  --prefix DIR    install below DIR instead of / (also: DESTDIR=DIR); for
                  images and tests. init/cleanup then get --config DIR/etc/...
  --no-systemctl  do not call systemctl (no systemd, containers, CI)
  --no-init       do not run `c8y-tunnel init --daemon`
  --uninstall     stop and disable the service, run `c8y-tunnel cleanup`,
                  remove the binary and the unit; the config is kept
  -h, --help      this text
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
	printf 'install.sh: error: %s\n' "$*" >&2
	exit 1
}

script_dir=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=${DESTDIR:-}
binary=""
use_systemctl=1
run_init=1
action=install

while [ $# -gt 0 ]; do
	case $1 in
	--binary)
		[ $# -ge 2 ] || die "--binary needs a file: --binary ./c8y-tunnel"
		binary=$2
		shift 2
		;;
	--binary=*)
		binary=${1#--binary=}
		shift
		;;
	--prefix)
		[ $# -ge 2 ] || die "--prefix needs a directory: --prefix /tmp/root"
		root=$2
		shift 2
		;;
	--prefix=*)
		root=${1#--prefix=}
		shift
		;;
	--no-systemctl)
		use_systemctl=0
		shift
		;;
	--no-init)
		run_init=0
		shift
		;;
	--uninstall)
		action=uninstall
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument '$1'"
		;;
	esac
done

# The root to install into: "" means the running system.
root=${root%/}
if [ -n "$root" ]; then
	[ -d "$root" ] || die "--prefix $root is not a directory: create it first"
	root=$(CDPATH='' cd -- "$root" && pwd)
	[ "$root" = / ] && root=""
fi

bin_path=/usr/bin/c8y-tunnel
config_dir=/etc/c8y-tunnel
config_path=$config_dir/config.toml
unit_path=/etc/systemd/system/c8y-tunnel.service
unit_name=c8y-tunnel.service

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
	die "run as root (sudo sh $0 ...), or use --prefix DIR to install below DIR"
fi

have_systemctl() {
	[ "$use_systemctl" -eq 1 ] && command -v systemctl >/dev/null 2>&1
}

# systemd is running here (not a chroot, a container without it, or an image).
systemd_running() {
	[ -z "$root" ] && [ -d /run/systemd/system ]
}

systemctl_root() {
	if [ -n "$root" ]; then
		systemctl --root="$root" "$@"
	else
		systemctl "$@"
	fi
}

find_binary() {
	if [ -n "$binary" ]; then
		[ -f "$binary" ] || die "--binary $binary does not exist"
		return
	fi
	arch=$(uname -m)
	case $arch in
	x86_64 | amd64) target=x86_64-unknown-linux-gnu ;;
	aarch64 | arm64) target=aarch64-unknown-linux-gnu ;;
	armv6* | armv7* | armhf | arm)
		die "there is no c8y-tunnel binary for 32-bit ARM ($arch): Deno has no such target; see docs/install.md, section 32-bit ARM"
		;;
	*) target=$arch-unknown-linux-gnu ;;
	esac
	for candidate in "$script_dir/c8y-tunnel" ./c8y-tunnel \
		"$script_dir/../dist/c8y-tunnel-$target"; do
		if [ -f "$candidate" ]; then
			binary=$candidate
			return
		fi
	done
	die "no c8y-tunnel binary found: give --binary FILE (for $arch: c8y-tunnel-$target from the release)"
}

install_files() {
	find_binary
	template=$script_dir/config.toml
	unit=$script_dir/c8y-tunnel.service
	[ -f "$template" ] || die "$template is missing: run install.sh from the install/ directory of c8y-tunnel"
	[ -f "$unit" ] || die "$unit is missing: run install.sh from the install/ directory of c8y-tunnel"

	# The binary: copy next to it, then rename, so a running agent is not
	# overwritten in place ("text file busy").
	mkdir -p "$root/usr/bin"
	cp "$binary" "$root$bin_path.new"
	chmod 0755 "$root$bin_path.new"
	mv -f "$root$bin_path.new" "$root$bin_path"
	say "installed $root$bin_path"

	mkdir -p "$root$config_dir"
	chmod 0755 "$root$config_dir"
	if [ -e "$root$config_path" ]; then
		say "kept the existing $root$config_path"
	else
		cp "$template" "$root$config_path.new"
		# The service runs as tedge; the config may hold a proxy password.
		if [ "$(id -u)" -eq 0 ] && getent group tedge >/dev/null 2>&1; then
			chgrp tedge "$root$config_path.new"
			chmod 0640 "$root$config_path.new"
		else
			chmod 0644 "$root$config_path.new"
		fi
		mv "$root$config_path.new" "$root$config_path"
		say "created $root$config_path (all settings commented out: edit [tunnel] allow)"
	fi

	mkdir -p "$root/etc/systemd/system"
	cp "$unit" "$root$unit_path.new"
	chmod 0644 "$root$unit_path.new"
	mv -f "$root$unit_path.new" "$root$unit_path"
	say "installed $root$unit_path"

	# Where `connect` (run by the mapper as tedge) may keep its log (log.file).
	mkdir -p "$root/var/log/c8y-tunnel"
	chmod 0750 "$root/var/log/c8y-tunnel"
	if [ "$(id -u)" -eq 0 ] && getent passwd tedge >/dev/null 2>&1; then
		chown tedge:tedge "$root/var/log/c8y-tunnel"
	fi

	if ! getent passwd tedge >/dev/null 2>&1; then
		say "warning: user tedge does not exist: install thin-edge.io first, or set User= and Group= with 'systemctl edit c8y-tunnel'"
	fi
}

run_init_daemon() {
	[ "$run_init" -eq 1 ] || return 0
	# Under --prefix, point it at the config below the prefix (thin-edge's
	# files stay where that config says).
	set --
	[ -z "$root" ] || set -- --config "$root$config_path"
	say "running c8y-tunnel init --daemon $*"
	if ! "$root$bin_path" init --daemon "$@"; then
		die "c8y-tunnel init --daemon failed (see above); the files are installed: fix the cause, run 'c8y-tunnel init --daemon', then 'systemctl restart c8y-tunnel'"
	fi
}

enable_service() {
	if ! have_systemctl; then
		say "not calling systemctl: enable the service with 'systemctl enable --now $unit_name'"
		return 0
	fi
	if systemd_running; then
		systemctl daemon-reload
		systemctl enable "$unit_name"
		# restart, not start: an upgrade must run the new binary
		systemctl restart "$unit_name"
		say "service $unit_name enabled and (re)started: 'journalctl -u c8y-tunnel' shows its log"
	else
		systemctl_root enable "$unit_name"
		say "service $unit_name enabled (systemd is not running here: it starts at the next boot)"
	fi
}

uninstall() {
	if have_systemctl; then
		if systemd_running; then
			systemctl disable --now "$unit_name" || true
		elif [ -e "$root$unit_path" ]; then
			systemctl_root disable "$unit_name" || true
		fi
	fi
	if [ -x "$root$bin_path" ]; then
		set --
		[ -z "$root" ] || set -- --config "$root$config_path"
		say "running c8y-tunnel cleanup $*"
		"$root$bin_path" cleanup "$@" ||
			say "warning: c8y-tunnel cleanup failed: remove /etc/tedge/operations/c8y/c8y_RemoteAccessConnect by hand"
	fi
	rm -f "$root$bin_path" "$root$unit_path"
	say "removed $root$bin_path and $root$unit_path"
	if have_systemctl && systemd_running; then
		systemctl daemon-reload
	fi
	if [ -e "$root$config_path" ]; then
		say "kept $root$config_path: delete $root$config_dir by hand if you no longer need it"
	fi
}

case $action in
install)
	install_files
	run_init_daemon
	enable_service
	say "done: check the setup with 'c8y-tunnel check'"
	;;
uninstall)
	uninstall
	;;
esac
