#!/usr/bin/env bash
# Smoke-test unidb's HTML dashboard in headless Chromium.
#
#   usage: tests/dashboard/check.sh URL OUTDIR
#   e.g.   tests/dashboard/check.sh 'http://127.0.0.1:9187/?token=secret' target/dashboard
#
# Loads URL once with virtual time (enough for the page's 2 s polling to render
# at least twice), then writes into OUTDIR:
#   dashboard.png  screenshot (1400x1000)
#   dom.html       DOM after the scripts ran
#   chromium.log   Chromium's stderr
#   console.log    the page's console lines (CONSOLE / Uncaught)
# Exits 0 when the page is clean; 1 with a message when a check fails; 2 on
# usage or environment errors. Installs Debian's chromium if it is missing.
#
# The dashboard never writes to the console, so every console line counts as a
# failure: this Chromium logs all console levels (log, warn, error) alike as
# "INFO:CONSOLE", so they cannot be told apart from the log.
#
# Environment: CHROMIUM (binary, default chromium), DASHBOARD_BUDGET_MS (virtual
# time, default 6000), DASHBOARD_TIMEOUT (wall-clock seconds, default 120).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 URL OUTDIR" >&2
  exit 2
fi
url=$1
outdir=$2
chromium=${CHROMIUM:-chromium}
budget_ms=${DASHBOARD_BUDGET_MS:-6000}
wall_timeout=${DASHBOARD_TIMEOUT:-120}

if ! command -v "$chromium" >/dev/null 2>&1; then
  echo "check.sh: $chromium not found, installing Debian's chromium" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "check.sh: need root or sudo to install chromium" >&2; exit 2; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q chromium >&2
  chromium=chromium
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
png=$outdir/dashboard.png
dom=$outdir/dom.html
log=$outdir/chromium.log
console=$outdir/console.log
rm -f "$png" "$dom" "$log" "$console"

profile=$(mktemp -d "${TMPDIR:-/tmp}/unidb-dashboard-profile.XXXXXX")
trap 'rm -rf "$profile"' EXIT

cmd=("$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage
  --no-first-run --no-default-browser-check --hide-scrollbars --mute-audio
  --user-data-dir="$profile" --window-size=1400,1000
  --virtual-time-budget="$budget_ms" --run-all-compositor-stages-before-draw
  --enable-logging=stderr --v=0
  --screenshot="$png" --dump-dom "$url")
echo "check.sh: ${cmd[*]}" | sed -E 's/([?&]token=)[^& ]*/\1***/g'

rc=0
timeout "$wall_timeout" "${cmd[@]}" >"$dom" 2>"$log" || rc=$?

failures=()
if [ "$rc" -eq 124 ]; then
  failures+=("chromium did not finish within ${wall_timeout}s")
elif [ "$rc" -ne 0 ]; then
  failures+=("chromium exited with status $rc (see $log)")
fi

grep -E 'CONSOLE|Uncaught' "$log" >"$console" || true
if [ -s "$console" ]; then
  failures+=("the page wrote $(wc -l <"$console") console line(s) / uncaught exception(s):")
  while IFS= read -r line; do failures+=("    ${line#*] }"); done <"$console"
fi

[ -s "$png" ] || failures+=("no screenshot written to $png")

rows=""
if [ ! -s "$dom" ]; then
  failures+=("chromium dumped no DOM")
else
  grep -qE '<body[^>]*data-ready="1"' "$dom" ||
    failures+=('<body> lacks data-ready="1": /stats was never rendered (see the page banner in the screenshot)')
  table=$(grep -oE '<table[^>]*id="slowest"[^>]*>' "$dom" | head -n1 || true)
  rows=$(printf '%s' "$table" | sed -nE 's/.*data-rows="([0-9]+)".*/\1/p')
  if [ -z "$table" ]; then
    failures+=('no <table id="slowest"> in the DOM')
  elif [ -z "$rows" ] || [ "$rows" -eq 0 ]; then
    failures+=("#slowest has data-rows=\"${rows:-missing}\": no slow statements rendered")
  fi
fi

echo "check.sh: screenshot $png"
echo "check.sh: slowest statement rows: ${rows:-none}"
if [ ${#failures[@]} -gt 0 ]; then
  echo "check.sh: FAILED for $url" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "check.sh: OK"
