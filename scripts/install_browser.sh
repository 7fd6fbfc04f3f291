#!/usr/bin/env bash
# Install what the browser test (tests/widgets/test_widget_browser.py) needs:
# Debian's Chromium at /usr/bin/chromium and the Playwright Python package.
# Playwright's own browser download is not used: it needs network access to a CDN
# that CI and the project's machines do not have, and Debian's build is enough.
set -euo pipefail

PY="${PYTHON:-.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "install_browser: installing chromium with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium
    else
        echo "install_browser: /usr/bin/chromium is missing and this is not root with apt-get;" \
             "install Chromium yourself or the browser test will be skipped" >&2
    fi
fi

if [ -x "$PY" ] && ! "$PY" -c "import playwright" 2>/dev/null; then
    echo "install_browser: installing the playwright Python package into $PY"
    "$PY" -m pip install --quiet "playwright>=1.45"
fi
