#!/usr/bin/env bash
# Stops the swtpm started by swtpm-start.sh DIR. The state in DIR/state is
# kept: starting again on it gives back the same TPM.
#
#   softhsm-test/swtpm-stop.sh DIR
set -euo pipefail
dir=${1:?usage: swtpm-stop.sh DIR}
pidfile="$dir/swtpm.pid"
if [ ! -f "$pidfile" ]; then
  echo "swtpm-stop: no swtpm.pid in $dir (not running)" >&2
  exit 0
fi
pid=$(cat "$pidfile")
if kill "$pid" 2>/dev/null; then
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
fi
rm -f "$pidfile"
