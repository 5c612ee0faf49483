#!/bin/sh
# Installs the peers orgsync-bench measures in the same run (issue 16):
#
#   - PouchDB 9.0.0 (LevelDB adapter) + express-pouchdb 4.2.0 + express
#     4.21.2, exactly as pinned in package.json and package-lock.json, into
#     bench/peers/node_modules (gitignored; nothing global). Needs node and
#     npm (Debian: apt-get install nodejs npm).
#   - Syncthing from Debian's repository (apt-get, as root), pinned to
#     SYNCTHING_VERSION below: the version of Debian 12's repository.
#
# Idempotent: what is already installed at the pinned version is left as
# it is. It prints what it did. The bench itself never installs anything.
#
#   bench/peers/install.sh            # both
#   bench/peers/install.sh pouchdb    # only PouchDB
#   bench/peers/install.sh syncthing  # only Syncthing
set -eu

SYNCTHING_VERSION="1.19.2~ds1-1+b4"

here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}

pouchdb() {
    if ! command -v npm >/dev/null 2>&1; then
        echo "install.sh: npm not found; install node and npm first (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
    want=$(node -p "require('$here/package-lock.json').packages['node_modules/pouchdb'].version")
    have=$(node -p "try { require('$here/node_modules/pouchdb/package.json').version } catch (e) { 'none' }")
    if [ "$have" = "$want" ] && [ -f "$here/node_modules/express-pouchdb/package.json" ]; then
        echo "PouchDB $have already in $here/node_modules: nothing to do"
    else
        echo "PouchDB: npm ci in $here (versions from package-lock.json)..."
        # --ignore-scripts: leveldown loads its bundled prebuilt binary;
        # nothing is compiled and no package script runs.
        (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund)
    fi
    node -e "for (const p of ['pouchdb', 'express-pouchdb', 'express', 'leveldown']) console.log('  ' + p + ' ' + require('$here/node_modules/' + p + '/package.json').version)"
    # Proves the LevelDB adapter loads (its native binary), not just that
    # the files are there.
    probe=$(mktemp -d)
    (cd "$here" && node -e "const P = require('pouchdb'); const d = new P('$probe/probe'); d.info().then(i => { console.log('  adapter ' + i.adapter + ' loads'); return d.destroy(); })") || { rm -rf "$probe"; exit 1; }
    rm -rf "$probe"
}

syncthing_() {
    have=$(dpkg-query -W -f '${Version}' syncthing 2>/dev/null || true)
    if [ "$have" = "$SYNCTHING_VERSION" ]; then
        echo "Syncthing $have already installed: nothing to do"
    else
        if [ "$(id -u)" != 0 ]; then
            echo "install.sh: installing syncthing=$SYNCTHING_VERSION needs root (apt-get); run it with sudo" >&2
            exit 1
        fi
        echo "Syncthing: apt-get install syncthing=$SYNCTHING_VERSION (installed: ${have:-none})..."
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "syncthing=$SYNCTHING_VERSION"
    fi
    echo "  $(syncthing --version)"
}

case "$what" in
    all) pouchdb; syncthing_ ;;
    pouchdb) pouchdb ;;
    syncthing) syncthing_ ;;
    *) echo "usage: $0 [all|pouchdb|syncthing]" >&2; exit 2 ;;
esac
echo "done: orgsync-bench peers (and all) will measure what is installed"
