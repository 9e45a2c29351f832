#!/bin/sh
# build-deb.sh STAGE VERSION OUTDIR: turns a `make install DESTDIR=STAGE` tree into
# OUTDIR/plugvault_VERSION_amd64.deb with dpkg-deb (the Makefile's `deb` target calls it).
# The tray's files (binary, desktop entries, icons) are not part of this package: they are
# removed from STAGE. /etc/plugvault is made by the postinst, never shipped, so that removing
# the package leaves the configuration and the keys alone.
set -eu

stage=${1:?usage: build-deb.sh STAGE VERSION OUTDIR}
version=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "${stage:?}/etc" "$stage/usr/bin/plugvault-tray" "$stage/usr/share/applications" "$stage/usr/share/icons"
doc=$stage/usr/share/doc/plugvault
install -D -m 0644 "$here/copyright" "$doc/copyright"
# A native package's changelog: one entry for this build, dated by the last commit so the
# same tree gives the same package.
date=$(git -C "$here" log -1 --format=%aD 2>/dev/null || date -R)
printf 'plugvault (%s) unstable; urgency=medium\n\n  * Built from the plugvault source tree.\n\n -- plugvault developers <plugvault@users.noreply.github.com>  %s\n' \
	"$version" "$date" | gzip -9n > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
gzip -9nf "$doc/README.md"
install -D -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/plugvault"

install -d -m 0755 "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$stage/DEBIAN/control"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$stage/DEBIAN/$s"
done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/plugvault_${version}_amd64.deb"
