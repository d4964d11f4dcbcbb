#!/bin/sh
# Installs Chromium, the fonts pages need (Latin, CJK, emoji) and CA certificates on Debian.
# docker/Dockerfile runs it for the image, and `cargo xtask test` (the README's test command)
# runs it on the test machine, so CI proves the image's install steps on a fresh Debian.
#
# usage: install-chromium.sh [--clean | --check] [EXTRA_PACKAGE...]
#   --clean         remove apt's package lists afterwards (for the image layer)
#   --check         install nothing: exit 1 and name what is missing, if anything is
#   EXTRA_PACKAGE   more Debian packages to install with the same apt run (the image adds tini)
#
# Idempotent: packages already installed are left alone, and nothing runs when none is missing.
set -eu

PACKAGES="chromium fonts-liberation fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji ca-certificates"

clean=no
check=no
case "${1:-}" in
    --clean) clean=yes; shift ;;
    --check) check=yes; shift ;;
esac
for extra in "$@"; do
    case "$extra" in
        -*) echo "install-chromium: unknown option $extra (accepted: --clean or --check, then package names)" >&2
            exit 2 ;;
    esac
done

missing=""
for package in $PACKAGES "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing="$missing $package"
    fi
done

if [ -z "$missing" ]; then
    echo "install-chromium: chromium, fonts and certificates already installed"
    exit 0
fi

if [ "$check" = yes ]; then
    echo "install-chromium: missing:$missing (run docker/install-chromium.sh, or cargo xtask test)" >&2
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: installing$missing needs root" >&2
    exit 1
fi

echo "install-chromium: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# word splitting is wanted: one argument per package
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
if [ "$clean" = yes ]; then
    apt-get clean
    rm -rf /var/lib/apt/lists/*
fi
chromium --version
