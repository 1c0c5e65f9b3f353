#!/usr/bin/env bash
# The server must also build on macOS. This type-checks and lints the crate
# for the Mac target, so a Linux-only call outside `cfg` (or an import only
# Linux uses) fails here rather than on an editor's Mac. A check never links:
# the C part of a dependency (SQLite in libsqlite3-sys) only has to produce
# an object file, so a stand-in compiler serves and no Mac SDK is needed.
# Skipped, with a notice, when rustup cannot add the target (no rustup, no
# network).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-apple-darwin
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
	if ! rustup target add "$target" >/dev/null 2>&1; then
		echo "tests/macos-check.sh: cannot add the $target target; macOS check skipped" >&2
		exit 0
	fi
fi
stand_in=$(mktemp -d)
trap 'rm -rf "$stand_in"' EXIT
cat >"$stand_in/cc" <<'CC'
#!/usr/bin/env bash
# Writes an empty object file wherever -o points.
out=; prev=
for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
[ -z "$out" ] || : >"$out"
CC
cat >"$stand_in/ar" <<'AR'
#!/usr/bin/env bash
# Writes an empty archive for every .a named.
for a in "$@"; do case $a in *.a) : >"$a" ;; esac; done
AR
chmod +x "$stand_in/cc" "$stand_in/ar"
CC_x86_64_apple_darwin="$stand_in/cc" AR_x86_64_apple_darwin="$stand_in/ar" \
	cargo clippy --target "$target" --all-targets -- -D warnings
