#!/usr/bin/env bash
# `make test-load`: the whole suite (`make test`, set-up included) from a fresh clone of the
# commit that was HEAD when the script started (REV=... for another; every run tests the same
# commit, whatever is committed meanwhile) while a CPU hog keeps every core busy, RUNS times in a row (default 3). Every
# run must pass: the tests' verdicts may not depend on the machine's load. Prints each run's
# wall time and result; logs go to build/test-load/. Needs nothing but Python 3 (the hog is
# `python3 -c 'while True: pass'`, one per core).
#   RUNS=1 HOGS=4 make test-load      # one run, four busy processes
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
REV="$(git -C "$ROOT" rev-parse "${REV:-HEAD}")" || { echo "[test-load] unknown REV" >&2; exit 2; }
HOGS="${HOGS:-$(nproc)}"
LOGS="$ROOT/build/test-load"
mkdir -p "$LOGS"
hogs=()
stop_hogs() { for p in "${hogs[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null; done; hogs=(); }
suite=""   # the running suite: its own process group (setsid), so a signal stops all of it
stop_suite() { [[ -n "$suite" ]] && kill -- -"$suite" 2>/dev/null; suite=""; }
# a signal stops the whole script, not just the current run (the loop would go on to the next)
trap stop_hogs EXIT
trap 'stop_suite; stop_hogs; exit 130' INT TERM

fails=0
summary=()
for run in $(seq 1 "$RUNS"); do
  work="$(mktemp -d)"
  git clone -q "$ROOT" "$work/nol_ros" && git -C "$work/nol_ros" checkout -q "$REV"
  rev="$(git -C "$work/nol_ros" rev-parse --short HEAD)"
  for _ in $(seq 1 "$HOGS"); do python3 -c 'while True: pass' & hogs+=($!); done
  log="$LOGS/run$run.log"
  echo "[test-load] run $run/$RUNS: fresh clone of $rev, $HOGS CPU hogs, log $log"
  t0=$(date +%s)
  setsid bash -c 'cd "$1" && exec make test PYTEST_ARGS="$2"' _ "$work/nol_ros" \
    "${PYTEST_ARGS:-}" > "$log" 2>&1 &
  suite=$!
  wait "$suite"
  rc=$?
  suite=""
  t1=$(date +%s)
  stop_hogs
  result="$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$log" | tail -1 | tr -d '=' | xargs)"
  line="run $run: exit $rc, $(( (t1 - t0) / 60 )) min $(( (t1 - t0) % 60 )) s (set-up included), ${result:-no pytest summary}"
  echo "[test-load] $line"
  summary+=("$line")
  [[ $rc -eq 0 ]] || fails=$((fails + 1))
  rm -rf "$work"
done
echo "[test-load] summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $HOGS hogs):"
printf '  %s\n' "${summary[@]}"
exit $(( fails > 0 ))
