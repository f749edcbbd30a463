# Browser tests (scripts/suites/browser.sh) drive Debian's Chromium with playwright-core from npm.
# Sourced by scripts/test: packages only; there is no server to start.
NEEDED_PACKAGES+=(chromium)
command -v node >/dev/null 2>&1 || NEEDED_PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || NEEDED_PACKAGES+=(npm)

chromium_start() { :; }
chromium_stop() { :; }
