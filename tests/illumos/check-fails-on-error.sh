#!/usr/bin/env bash
# Proves that tools/check-illumos really compiles illumos-only code: on a copy of the
# workspace it (1) passes unmodified, (2) fails once a type error is injected into
# crates/pyframe-reader/src/platform/illumos.rs and names that file, while (3) the
# host's own `cargo check` of the same broken copy still passes (the code is invisible
# to a Linux build). Skips, saying why, when the illumos toolchain cannot be set up.
#
# Usage: tests/illumos/check-fails-on-error.sh   (from anywhere)
# Env:   CARGO_TARGET_DIR for the illumos check (default: this repo's
#        target/illumos-check, so the std built for illumos is reused).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CHECK=$REPO/tools/check-illumos
ILLUMOS_RS=crates/pyframe-reader/src/platform/illumos.rs
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/illumos-check}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
WS=$TMP/ws
mkdir -p "$WS"
# the working tree as it is (uncommitted edits included), without build output or git
(cd "$REPO" && tar --exclude=./target --exclude=./.git -cf - .) | tar -xf - -C "$WS"

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }

echo "== 1. unmodified copy"
"$CHECK" "$WS" --workspace --all-targets >"$TMP/clean.log" 2>&1
rc=$?
if [ "$rc" -eq 2 ]; then
  tail -5 "$TMP/clean.log"
  echo "SKIP: the illumos toolchain could not be set up (check-illumos exit 2); nothing was tested"
  exit 0
fi
if [ "$rc" -eq 0 ]; then ok "check-illumos passes on the unmodified workspace"; else
  tail -30 "$TMP/clean.log"; bad "check-illumos fails on the unmodified workspace (exit $rc)"; fi

echo "== 2. type error injected into $ILLUMOS_RS"
cat >>"$WS/$ILLUMOS_RS" <<'RS'

// injected by tests/illumos/check-fails-on-error.sh
fn injected_type_error() -> u32 {
    "not a u32"
}
RS
"$CHECK" "$WS" --workspace --all-targets >"$TMP/broken.log" 2>&1
rc=$?
grep -E '^error|-->' "$TMP/broken.log" | head -6
if [ "$rc" -ne 0 ] && grep -q 'error\[E0308\]' "$TMP/broken.log" \
    && grep -q "$ILLUMOS_RS" "$TMP/broken.log"; then
  ok "check-illumos fails (exit $rc) with E0308 in $ILLUMOS_RS"
else
  tail -30 "$TMP/broken.log"; bad "check-illumos did not report the injected error (exit $rc)"
fi

echo "== 3. host cargo check of the same broken copy"
# a separate target dir: the host build must not disturb the illumos one
if (cd "$WS" && CARGO_TARGET_DIR=$REPO/target/check-fails-on-error-host \
      cargo check -q -p pyframe-reader --all-targets) >"$TMP/host.log" 2>&1; then
  ok "the host build does not see illumos.rs (so only check-illumos can catch it)"
else
  tail -20 "$TMP/host.log"; bad "the host build failed on the broken copy"
fi

echo "check-fails-on-error: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
