#!/bin/sh
# Runs first; steps share the run directory, so the next step sees this file.
echo "fetched" > "${FLWD_RUN_DIR:-.}/$STAGE_FILE"
echo "fetch done"
