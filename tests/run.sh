#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: installs the
# Debian packages the tests need when they are missing (the kernel-client
# VM, libnfs), checks formatting and lints (also for macOS), then runs every
# test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=(qemu-system-x86 linux-image-amd64 busybox-static kmod cpio gcc libc6-dev python3 passt
      libnfs-utils coreutils findutils fonts-dejavu-core)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "tests/run.sh: installing ${missing[*]}"
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The VM's guest image is built once and cached (~/.cache/nfs-vm).
NFSVM=${NFSVM_SH:-../shared/nfs-vm/nfs-vm.sh}
[ -x "$NFSVM" ] || { echo "tests/run.sh: $NFSVM not found (shared/ must sit beside the checkout)" >&2; exit 1; }
"$NFSVM" --build-only

# One release build serves clippy and the tests (their proc macros and
# build scripts are compiled once), without the debug info kept for
# profiling (faster to compile and link; nothing here reads it).
export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-0}
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
tests/macos-check.sh
cargo test --release --lib --tests
