#!/usr/bin/env bash
# Starts a swtpm TPM 2.0 simulator for tests, CI and the demo, with its state
# in DIR (created if missing; reused as is, so a restart keeps the TPM's seeds,
# NV indices and therefore every sealed blob).
#
#   softhsm-test/swtpm-start.sh DIR [PORT]
#
# PORT is the TPM command port (the control port is PORT+1); without it a free
# pair is picked. swtpm serves raw TPM 2.0 commands on PORT, one connection at
# a time, and starts already powered on (--flags not-need-init,startup-clear):
# no power or startup commands are needed or sent.
# On success it prints, and writes to DIR/swtpm.env:
#   SWTPM_PORT=... SWTPM_CTRL_PORT=... SWTPM_PID=... TPM_URI=tpm:host=127.0.0.1;port=...
# Stop it with softhsm-test/swtpm-stop.sh DIR.
set -euo pipefail
dir=${1:?usage: swtpm-start.sh DIR [PORT]}
want_port=${2:-}
command -v swtpm >/dev/null 2>&1 || { echo "swtpm-start: swtpm is not installed (apt install swtpm swtpm-tools, or softhsm-test/install-deps.sh)" >&2; exit 3; }
mkdir -p "$dir/state"
chmod 700 "$dir" "$dir/state"
dir=$(cd "$dir" && pwd)

if [ -f "$dir/swtpm.pid" ] && kill -0 "$(cat "$dir/swtpm.pid")" 2>/dev/null; then
  echo "swtpm-start: swtpm already running for $dir (pid $(cat "$dir/swtpm.pid")); stop it with swtpm-stop.sh" >&2
  exit 4
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() { # port
  local p=$1 c=$(($1 + 1))
  rm -f "$dir/swtpm.pid"
  swtpm socket --tpm2 \
    --server "type=tcp,port=$p,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$c,bindaddr=127.0.0.1" \
    --tpmstate "dir=$dir/state" \
    --flags not-need-init,startup-clear \
    --pid "file=$dir/swtpm.pid" \
    --log "file=$dir/swtpm.log,level=1" \
    --daemon 2>>"$dir/swtpm.log" || return 1
  for _ in $(seq 1 50); do # up to 5 s for the command port to accept
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

for attempt in $(seq 1 20); do
  if [ -n "$want_port" ]; then
    port=$want_port
  else
    port=$((20000 + (RANDOM % 20000) * 2))
    port_free "$port" && port_free $((port + 1)) || continue
  fi
  if start "$port"; then
    pid=$(cat "$dir/swtpm.pid")
    {
      echo "SWTPM_PORT=$port"
      echo "SWTPM_CTRL_PORT=$((port + 1))"
      echo "SWTPM_PID=$pid"
      echo "TPM_URI='tpm:host=127.0.0.1;port=$port'"
    } >"$dir/swtpm.env"
    cat "$dir/swtpm.env"
    exit 0
  fi
  [ -f "$dir/swtpm.pid" ] && kill "$(cat "$dir/swtpm.pid")" 2>/dev/null || true
  if [ -n "$want_port" ]; then
    echo "swtpm-start: could not start swtpm on port $want_port (in use?); see $dir/swtpm.log" >&2
    exit 1
  fi
done
echo "swtpm-start: no free port pair found; see $dir/swtpm.log" >&2
exit 1
