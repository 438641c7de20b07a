# Headless Chromium from Debian for the browser tests (Playwright drives it; `playwright install`
# cannot download here). Sourced by scripts/test.sh: idempotent, quiet, no stdin.
if [ ! -x /usr/bin/chromium ]; then
  # Other hooks may be installing at the same moment: wait for the dpkg lock instead of failing.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
export SCREENING_CHROMIUM=/usr/bin/chromium

# axe-core from the npm registry, injected into every page by tests/test_web_browser.py. Pinned,
# installed once into a cache directory outside the repository (idempotent, no stdin).
AXE_VERSION=4.10.3
AXE_DIR=${SCREENING_AXE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/screening-tests/axe-core-$AXE_VERSION}
if [ ! -f "$AXE_DIR/node_modules/axe-core/axe.min.js" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends npm >/dev/null
  fi
  mkdir -p "$AXE_DIR"
  npm install --prefix "$AXE_DIR" --no-audit --no-fund --silent --no-save "axe-core@$AXE_VERSION" </dev/null >/dev/null
fi
export SCREENING_AXE="$AXE_DIR/node_modules/axe-core/axe.min.js"
