#!/usr/bin/env bash
# The browser the page tests drive: Debian's chromium and its chromedriver.
# Usage: browser.sh install|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

present() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

case ${1:-} in
  install) present || apt_install chromium chromium-driver ;;
  status) if present; then echo "browser: $(chromium --version 2>/dev/null)"; else echo "browser: not installed"; exit 1; fi ;;
  *) usage "install|status" ;;
esac
