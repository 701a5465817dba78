#!/usr/bin/env bash
# setup.sh - makes this Debian 12 host ready to build and run ironclaw.
#
# Idempotent: installs only the Debian packages that are missing (apt-get,
# nothing from anywhere else) and extracts the guest kernel from Debian's
# linux-image-*-cloud-amd64 package into the data directory, without
# installing it as the host's kernel. Run as root; a non-root run only
# checks and says what is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libjansson-dev libcurl4-openssl-dev libseccomp-dev
  libnftables-dev libssl-dev libcmocka-dev
  qemu-system-x86 busybox-static nftables iptables iproute2 cpio
  lz4   # Debian's cloud kernel is lz4-compressed: image build extracts Firecracker's vmlinux
)
KERNEL_META=linux-image-cloud-amd64

say() { printf 'setup: %s\n' "$*"; }

data_dir() {
  if [ -n "${IRONCLAW_DATA_DIR:-}" ]; then echo "$IRONCLAW_DATA_DIR"
  elif [ "$(id -u)" = 0 ]; then echo /var/lib/ironclaw
  else echo "${XDG_DATA_HOME:-$HOME/.local/share}/ironclaw"; fi
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return
  say "apt-get update"
  apt-get update -q >/dev/null
  APT_UPDATED=1
}

install_packages() {
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// }" ]; then say "packages: all present"; return; fi
  if [ "$(id -u)" != 0 ]; then
    say "missing packages: $missing(run 'sudo make setup')"; exit 1
  fi
  apt_update_once
  say "installing: $missing"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
}

# Name of the versioned kernel package the meta-package points at.
kernel_package() {
  apt-cache depends "$KERNEL_META" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}

# Newer Debian kernels ship modules as .ko.xz or .ko.zst. The image builder
# reads each module's ELF .modinfo and the guest loads them with plain
# finit_module, so they are stored uncompressed (modules.builtin and the
# module names are unaffected).
decompress_modules() {
  local mods=$1 n
  n=$(find "$mods" -name '*.ko.xz' | wc -l)
  if [ "$n" -gt 0 ]; then
    command -v xz >/dev/null || { say "kernel modules are .ko.xz: install xz-utils"; exit 1; }
    say "kernel: uncompressing $n .ko.xz modules"
    find "$mods" -name '*.ko.xz' -exec xz -d {} +
  fi
  n=$(find "$mods" -name '*.ko.zst' | wc -l)
  if [ "$n" -gt 0 ]; then
    command -v zstd >/dev/null || { say "kernel modules are .ko.zst: install zstd"; exit 1; }
    say "kernel: uncompressing $n .ko.zst modules"
    find "$mods" -name '*.ko.zst' -exec zstd -q -d --rm {} +
  fi
}

install_kernel() {
  local dir; dir=$(data_dir)/kernels
  local pkg; pkg=$(kernel_package)
  if [ -z "$pkg" ]; then apt_update_once; pkg=$(kernel_package); fi
  if [ -z "$pkg" ]; then
    # Offline with no package lists: keep whatever kernel is already there.
    if [ -e "$dir/current/vmlinuz" ]; then say "kernel: keeping $(readlink "$dir/current")"; return; fi
    say "cannot resolve $KERNEL_META and no kernel extracted yet"; exit 1
  fi
  if [ -e "$dir/$pkg/vmlinuz" ]; then
    say "kernel: $pkg already extracted"
  else
    [ "$(id -u)" = 0 ] || { say "kernel $pkg missing (run 'sudo make setup')"; exit 1; }
    local tmp; tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    say "kernel: downloading $pkg (not installed on the host, only extracted)"
    # _apt cannot write into a root-only mktemp dir; that is expected.
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) \
      || { apt_update_once; (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); }
    dpkg-deb -x "$tmp"/*.deb "$tmp/root"
    local vmlinuz kver
    vmlinuz=$(ls "$tmp"/root/boot/vmlinuz-* | head -1)
    kver=${vmlinuz##*/vmlinuz-}
    mkdir -p "$dir/$pkg.part"
    cp "$vmlinuz" "$dir/$pkg.part/vmlinuz"
    cp "$tmp/root/boot/config-$kver" "$dir/$pkg.part/config"
    mkdir -p "$dir/$pkg.part/modules"
    cp -a "$tmp/root/lib/modules/$kver/." "$dir/$pkg.part/modules/"
    echo "$kver" > "$dir/$pkg.part/release"
    decompress_modules "$dir/$pkg.part/modules"
    rm -rf "$dir/$pkg"
    mv "$dir/$pkg.part" "$dir/$pkg"
  fi
  ln -sfn "$pkg" "$dir/current"
}

install_packages
install_kernel
say "ready (data directory: $(data_dir))"
