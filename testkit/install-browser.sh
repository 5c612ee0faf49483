#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver for the browser tests
# (tests/e2e/web_browser.rs): Debian's `chromium` and `chromium-driver`.
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver
# both exist. Non-interactive; runs apt-get as root, or through sudo.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install-browser: chromium and chromedriver already present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    echo "install-browser: need root or sudo to install chromium and chromium-driver" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver

for b in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$b" ]; then
        echo "install-browser: $b still missing after apt-get install" >&2
        exit 1
    fi
done
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium), $(/usr/bin/chromedriver --version 2>/dev/null | head -1)"
