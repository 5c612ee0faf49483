#!/usr/bin/env bash
# Builds the orgsync .deb (cargo-deb) and checks it: the three binaries,
# the systemd unit, man pages and shell completions are in it; the unit
# passes `systemd-analyze verify`; the binaries extracted from the package
# run `--version`.
#
# CI (after `cargo test --workspace`) packages the dev-profile binaries the
# tests already built, so it costs no extra compile:
#     testkit/check-package.sh
# A real release package (optimised binaries, stripped):
#     PROFILE=release testkit/check-package.sh
#     # -> target/debian/orgsync_<version>-1_<arch>.deb
#
# Installs cargo-deb (pinned) with `cargo install` when it is missing.
# Needs dpkg-deb and systemd-analyze (Debian: dpkg, systemd); systemd
# itself need not be running.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=2.12.1
PROFILE=${PROFILE:-dev}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
case "$PROFILE" in
    dev | test) PROFILE_DIR=debug ;;
    *) PROFILE_DIR=$PROFILE ;;
esac
BIN_DIR=$TARGET/$PROFILE_DIR
started=$(date +%s)

fail() {
    echo "check-package: FAILED: $*" >&2
    exit 1
}

for tool in dpkg-deb systemd-analyze; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install dpkg systemd)"
done

if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION"
    # An unoptimised build without the xz (C liblzma) feature compiles in
    # well under a minute instead of ~5: packaging a few files needs
    # neither speed nor xz (gzip is used). The release profile at
    # opt-level 0, not --debug: cargo-deb has debug assertions that fail on
    # this package's assets.
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --no-default-features \
        --config 'profile.release.opt-level=0' --config 'profile.release.debug-assertions=false'
fi
if ! cargo deb --version >/dev/null 2>&1; then
    fail "cargo-deb did not install"
fi
installed=$(date +%s)

echo "== building the binaries ($PROFILE; a no-op when the tests built them)"
cargo build --quiet --profile "$PROFILE" -p orgsync-daemon -p orgsync-keytool --bins

echo "== man pages and completions from the clap definitions"
rm -rf "$BIN_DIR/assets"
for bin in orgsyncd orgsync orgsync-keytool; do
    "$BIN_DIR/$bin" --generate-assets "$BIN_DIR/assets"
done

echo "== cargo deb"
OUT_DIR=$TARGET/debian
mkdir -p "$OUT_DIR"
deb_flags=()
# A test package: quick compression of stripped copies (the dev binaries
# carry ~150 MB of debug info each). cargo-deb warns that dev profiles are
# for tests only; that is what this is.
[ "$PROFILE_DIR" = debug ] && deb_flags=(--fast --strip)
deb=$(cargo deb -p orgsync-daemon --no-build --profile "$PROFILE" "${deb_flags[@]}" --output "$OUT_DIR" | tail -n 1)
rm -f "$OUT_DIR"/*-stripped
[ -f "$deb" ] || fail "cargo deb did not say where the package is (got: $deb)"
echo "$deb ($(du -h "$deb" | cut -f1))"

echo "== contents (dpkg-deb -c)"
# Paths only, without the "./" some dpkg-deb versions put first.
listing=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./||')
want=(
    usr/bin/orgsyncd usr/bin/orgsync usr/bin/orgsync-keytool
    lib/systemd/system/orgsyncd.service
    usr/lib/sysusers.d/orgsync.conf
    usr/share/man/man1/orgsyncd.1.gz usr/share/man/man1/orgsync.1.gz
    usr/share/man/man1/orgsync-keytool.1.gz usr/share/man/man1/orgsync-share-add.1.gz
)
for bin in orgsyncd orgsync orgsync-keytool; do
    want+=(
        "usr/share/bash-completion/completions/$bin"
        "usr/share/zsh/vendor-completions/_$bin"
        "usr/share/fish/vendor_completions.d/$bin.fish"
    )
done
for path in "${want[@]}"; do
    # Units land in lib/ or usr/lib/ depending on the cargo-deb version.
    grep -qxF -e "$path" -e "usr/$path" <<<"$listing" || fail "$path is not in the package"
done
echo "${#want[@]} expected files present ($(wc -l <<<"$listing") entries)"

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.verify.log"' EXIT
dpkg-deb -x "$deb" "$root"
unit=$(find "$root" -name orgsyncd.service -path '*systemd/system*' | head -n 1)
[ -n "$unit" ] || fail "no orgsyncd.service extracted"

echo "== systemd-analyze verify (unit from the package)"
# Verified inside the extracted tree (--root), so ExecStart=/usr/bin/orgsyncd
# is the packaged binary and the man: links are the packaged pages. The
# tree gets what a system provides around the package: the host's units
# (sysinit.target, ...) and kill(1) for ExecReload.
unit_dir=$(dirname "$unit")
cp -rn /lib/systemd/system/. "$unit_dir/"
mkdir -p "$root/bin"
cp "$(type -P kill)" "$root/bin/kill"
verify_log=$root.verify.log
if ! MANPATH="$root/usr/share/man" systemd-analyze verify --man=yes --root="$root" \
    "/${unit#"$root"/}" >"$verify_log" 2>&1; then
    cat "$verify_log" >&2
    fail "systemd-analyze verify"
fi
# verify exits 0 after some findings (unknown keys, bad values); any line
# naming our unit is one.
if grep -F "orgsyncd.service" "$verify_log" >&2; then
    fail "systemd-analyze verify has remarks on orgsyncd.service"
fi
rm -f "$verify_log"
echo "ok"

echo "== extracted binaries run"
for bin in orgsyncd orgsync orgsync-keytool; do
    "$root/usr/bin/$bin" --version || fail "$bin --version"
done

echo "check-package: OK: $deb; cargo-deb ready in $((installed - started)) s, package built and checked in $(($(date +%s) - installed)) s"
