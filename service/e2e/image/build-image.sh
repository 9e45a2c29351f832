#!/bin/sh
# build-image.sh OUT PACKAGES: builds the plugvault e2e guest into OUT (vmlinuz, initrd.img,
# root.img) from Debian packages. PACKAGES is a comma-separated list. Run as root. The harness
# caches OUT keyed by a hash of this script and the package list, so any change here rebuilds.
#
# "build-image.sh customize TREE" is the mmdebstrap customize hook (the same file, so that one
# hash covers every step).
set -eu

customize() {
	tree=$1
	echo plugvault-e2e >"$tree/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 plugvault-e2e\n' >"$tree/etc/hosts"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$tree/etc/fstab"
	# Root without a password on the serial console, for debugging a hung guest by hand.
	chroot "$tree" passwd -d root >/dev/null
	# alice owns the backed-up home; bob is an unprivileged user for the polkit checks.
	chroot "$tree" useradd -m -u 1000 -U -s /bin/bash alice
	chroot "$tree" useradd -m -u 1001 -U -s /bin/bash bob
	# The guest agent: only started when the kernel command line carries plugvault.e2e=1. It
	# mounts the 9p share (agent binary, install overlay) and talks to the host over a
	# virtio-serial port.
	cat >"$tree/etc/systemd/system/plugvault-e2e-agent.service" <<'UNIT'
[Unit]
Description=plugvault e2e guest agent (test VMs only)
ConditionKernelCommandLine=plugvault.e2e=1
After=systemd-udevd.service dbus.service local-fs.target
Wants=dbus.service

[Service]
Type=simple
ExecStartPre=/usr/sbin/modprobe -a 9p 9pnet_virtio virtio_console
ExecStartPre=/bin/mkdir -p /run/plugvault-e2e
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host0 /run/plugvault-e2e
ExecStart=/run/plugvault-e2e/guestagent
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
	mkdir -p "$tree/etc/systemd/system/multi-user.target.wants"
	ln -sf /etc/systemd/system/plugvault-e2e-agent.service \
		"$tree/etc/systemd/system/multi-user.target.wants/plugvault-e2e-agent.service"
	# Nothing in a test VM needs periodic jobs competing for the CPU.
	for u in e2scrub_all.timer e2scrub_reap.service fstrim.timer apt-daily.timer \
		apt-daily-upgrade.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer; do
		ln -sf /dev/null "$tree/etc/systemd/system/$u"
	done
	mkdir -p "$tree/etc/systemd/journald.conf.d"
	printf '[Journal]\nForwardToConsole=no\nStorage=volatile\n' \
		>"$tree/etc/systemd/journald.conf.d/plugvault-e2e.conf"
	# Modules a headless VM never loads: halves the tree.
	for kdir in "$tree"/usr/lib/modules/*; do
		k=$kdir/kernel
		rm -rf "$k/sound" "$k/drivers/gpu" "$k/drivers/media" "$k/drivers/net" \
			"$k/drivers/infiniband" "$k/drivers/staging" "$k/drivers/isdn" \
			"$k/drivers/bluetooth" "$k/drivers/iio" "$k/drivers/hwmon" \
			"$k/drivers/input/touchscreen" "$k/drivers/input/misc" "$k/net/wireless" \
			"$k/net/mac80211" "$k/net/bluetooth" "$k/drivers/scsi/qla2xxx" \
			"$k/drivers/scsi/lpfc" "$k/drivers/scsi/mpt3sas" "$k/drivers/target"
		chroot "$tree" depmod -a "$(basename "$kdir")"
	done
	rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/* "$tree"/var/cache/debconf/*-old \
		"$tree"/var/log/*.log
}

if [ "${1:-}" = customize ]; then
	customize "$2"
	exit 0
fi

out=$1
packages=$2
tree=$out/tree
self=$(readlink -f "$0")

# MODULES=list keeps the initrd at ~7 MiB: it only needs to find the virtio root disk.
# conf.d and modules.d are not conffiles, so writing them before the packages is safe.
# shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
mmdebstrap --quiet --variant=minbase --include="$packages" \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"' \
	--setup-hook='printf "MODULES=list\n" >"$1/etc/initramfs-tools/conf.d/plugvault-e2e.conf"' \
	--setup-hook='printf "virtio_pci\nvirtio_blk\next4\n" >"$1/usr/share/initramfs-tools/modules.d/plugvault-e2e"' \
	--customize-hook="\"$self\" customize \"\$1\"" \
	bookworm "$tree" http://deb.debian.org/debian </dev/null

cp "$(readlink -f "$tree/vmlinuz")" "$out/vmlinuz"
cp "$(readlink -f "$tree/initrd.img")" "$out/initrd.img"
# The root filesystem is made from the tree without a loop mount; the VM opens it with
# snapshot=on, so it never changes.
size_mib=$(($(du -sm "$tree" | cut -f1) + 768))
mkfs.ext4 -q -L e2e-root -E root_owner=0:0 -d "$tree" "$out/root.img" "${size_mib}M"
rm -rf "$tree"
