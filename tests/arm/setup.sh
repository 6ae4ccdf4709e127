#!/usr/bin/env bash
# Prepare what tests/test_tvm_arm.py needs to run aarch64 builds under qemu-user:
#   1. qemu-user-static, debootstrap and the aarch64 cross compiler (apt, when missing; needs root);
#   2. a minimal arm64 Debian sysroot with python3 and libstdc++ (debootstrap --foreign; the
#      second stage cannot run without binfmt_misc, so the downloaded packages are unpacked
#      directly, which is all qemu-aarch64-static -L needs to run python3);
#   3. the aarch64 wheels of apache-tvm, apache-tvm-ffi and numpy (pip --target; TVM's compiler
#      library is deleted: the device side must work with the runtime alone).
# Everything is cached under ~/.cache/splitc-arm/<key>. It never fails the build: when a step is
# impossible it writes the reason to <cache>/skip-reason and the tests skip with that reason.
set -uo pipefail

PY=${PYTHON:-python3}
SUITE=${SPLITC_ARM_SUITE:-bookworm}
MIRROR=${SPLITC_ARM_MIRROR:-http://deb.debian.org/debian}
ROOT=${SPLITC_ARM_CACHE:-$HOME/.cache/splitc-arm}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"; }
TVM_VERSION=$(version apache-tvm 0.27.0.post1)
FFI_VERSION=$(version apache-tvm-ffi 0.1.14.post1)
DIR="$ROOT/$SUITE-tvm$TVM_VERSION-ffi$FFI_VERSION-v1"
mkdir -p "$DIR" && ln -sfn "$DIR" "$ROOT/current"
rm -f "$DIR/skip-reason"

skip() { echo "$*" > "$DIR/skip-reason"; echo "test-arm: skipping: $*" >&2; exit 0; }
log() { echo "test-arm: $*" >&2; }

install_tools() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || skip "missing ${missing[*]} and not root to apt-get install them"
  log "apt-get install ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >"$DIR/apt.log" 2>&1 || skip "apt-get install ${missing[*]} failed (see $DIR/apt.log)"
}

build_sysroot() {
  [ -f "$DIR/sysroot/.complete" ] && return 0
  [ "$(id -u)" -eq 0 ] || skip "debootstrap needs root to build the arm64 sysroot"
  local tmp="$DIR/sysroot.tmp"
  rm -rf "$tmp"
  log "debootstrap --arch=arm64 --foreign $SUITE (first stage)"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libstdc++6 \
      "$SUITE" "$tmp" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 || skip "debootstrap failed (see $DIR/debootstrap.log)"
  log "unpacking $(ls "$tmp"/var/cache/apt/archives/*.deb | wc -l) packages (stands in for the second stage)"
  for deb in "$tmp"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$tmp" 2>/dev/null
  done
  rm -f "$tmp"/var/cache/apt/archives/*.deb
  qemu-aarch64-static -L "$tmp" "$tmp/usr/bin/python3" -c "import platform; assert platform.machine() == 'aarch64'" \
      || skip "python3 of the arm64 sysroot does not run under qemu-aarch64-static"
  touch "$tmp/.complete" && rm -rf "$DIR/sysroot" && mv "$tmp" "$DIR/sysroot"
}

install_wheels() {
  [ -f "$DIR/site/.complete" ] && return 0
  local pyver
  pyver=$(qemu-aarch64-static -L "$DIR/sysroot" "$DIR/sysroot/usr/bin/python3" -c \
      "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')") || skip "cannot query the arm64 python3"
  rm -rf "$DIR/site.tmp"
  log "pip install aarch64 wheels (python $pyver): apache-tvm==$TVM_VERSION apache-tvm-ffi==$FFI_VERSION numpy"
  "$PY" -m pip install --quiet --target "$DIR/site.tmp" --platform manylinux_2_28_aarch64 --python-version "$pyver" \
      --implementation cp --only-binary=:all: "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" numpy \
      >"$DIR/pip.log" 2>&1 || skip "pip could not fetch the aarch64 wheels (see $DIR/pip.log)"
  rm -f "$DIR/site.tmp/tvm/lib/libtvm_compiler.so"
  touch "$DIR/site.tmp/.complete" && rm -rf "$DIR/site" && mv "$DIR/site.tmp" "$DIR/site"
}

start=$(date +%s)
install_tools
build_sysroot
install_wheels
log "ready in $(( $(date +%s) - start )) s: $DIR"
echo "$DIR"
