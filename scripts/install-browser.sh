#!/bin/sh
# Debian's Chromium (and CJK fonts, so Chinese text renders) for the browser test, tests/test_browser.py.
# Never downloads a browser build of its own: Playwright drives /usr/bin/chromium.
# Non-interactive; needs root (as in CI) or password-less sudo. Does nothing when both are installed.
# Never fails the build: without chromium the browser test skips and says what is missing.
set -u

missing=""
[ -x /usr/bin/chromium ] || missing="chromium"
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$missing fonts-noto-cjk"
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-browser: not root and no password-less sudo; run: apt-get install chromium fonts-noto-cjk" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install chromium and CJK fonts by hand (the browser test skips)" >&2
    exit 0
fi
echo "install-browser: apt-get install$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
    /usr/bin/chromium --version 2>/dev/null || true
else
    echo "install-browser: apt-get failed; the browser test will skip" >&2
fi
exit 0
