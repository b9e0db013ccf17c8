#!/usr/bin/env bash
# Pretend to back up a few files into $FLWD_ARG_TARGET (read from the environment).
set -euo pipefail
target="${FLWD_ARG_TARGET:?target argument missing}"
echo "Starting backup to ${target} (dry run: ${FLWD_ARG_DRY_RUN:-false})"
count=0
for name in etc home var; do
  echo "backing up /${name}"
  count=$((count + 1))
done
echo "Backup complete: ${count} directories"
if [ -n "${FLWD_RESULT_FILE:-}" ]; then
  printf '{"files_backed_up": %d, "target": "%s"}\n' "$count" "$target" > "$FLWD_RESULT_FILE"
fi
