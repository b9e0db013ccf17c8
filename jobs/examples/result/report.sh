#!/bin/sh
# Write a CSV artifact into $FLWD_ARTIFACTS_DIR and a JSON result into $FLWD_RESULT_FILE.
set -eu
rows="${FLWD_ARG_ROWS:-3}"
out="${FLWD_ARTIFACTS_DIR:-.}/report.csv"
echo "id,value" > "$out"
i=1
while [ "$i" -le "$rows" ]; do
  echo "$i,$((i * i))" >> "$out"
  i=$((i + 1))
done
echo "wrote $rows rows to report.csv"
printf '{"rows": %s, "artifact": "report.csv"}\n' "$rows" > "${FLWD_RESULT_FILE:-/dev/null}"
