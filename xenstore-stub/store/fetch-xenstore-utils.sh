#!/bin/sh
# Downloads Debian's xenstore client tools (xenstore-read, -write, -ls, ...) and their two
# libraries, and unpacks them under DIR without installing anything system-wide. The
# xenstore_utils integration test then finds them with XENSTORE_UTILS_DIR=DIR:
#
#     xenstore-stub/store/fetch-xenstore-utils.sh /some/dir
#     XENSTORE_UTILS_DIR=/some/dir cargo test -p xenstore-store --test xenstore_utils
#
# Needs a Debian-style system (apt-get, dpkg-deb) with Xen's packages in its sources.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
packages="xenstore-utils libxenstore4 libxentoolcore1"

if [ -x "$dir/usr/bin/xenstore-read" ]; then
    echo "xenstore tools already in $dir"
    exit 0
fi

mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's download sandbox user must be able to write here.
chmod 0755 "$work"

if ! (cd "$work" && apt-get download $packages); then
    echo "apt-get download failed; refreshing the package lists and retrying" >&2
    apt-get update
    (cd "$work" && apt-get download $packages)
fi

for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$dir"
done

if [ ! -x "$dir/usr/bin/xenstore-read" ]; then
    echo "unpacked the packages but $dir/usr/bin/xenstore-read is missing" >&2
    exit 1
fi
echo "xenstore tools in $dir/usr/bin (libraries in $dir/usr/lib/x86_64-linux-gnu)"
