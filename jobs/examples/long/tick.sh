#!/usr/bin/env bash
# Tick once a second. A background child sleeps as long as we run: cancelling the run must
# stop it too (flwd signals the whole process group).
set -u
seconds="${FLWD_ARG_SECONDS:-300}"
sleep "$((seconds + 60))" &
echo "background child $! started"
for i in $(seq 1 "$seconds"); do
  echo "tick $i/$seconds"
  sleep 1
done
kill %1 2>/dev/null
echo "done"
