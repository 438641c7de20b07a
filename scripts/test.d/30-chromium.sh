# Headless Chromium from Debian for the browser tests (Playwright drives it; `playwright install`
# cannot download here). Sourced by scripts/test.sh: idempotent, quiet, no stdin.
if [ ! -x /usr/bin/chromium ]; then
  # Other hooks may be installing at the same moment: wait for the dpkg lock instead of failing.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
export SCREENING_CHROMIUM=/usr/bin/chromium
