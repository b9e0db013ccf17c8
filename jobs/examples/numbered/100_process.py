"""Runs second (by name), with the server's Python: the .py extension chooses it."""

import os

path = os.path.join(os.environ.get("FLWD_RUN_DIR", "."), os.environ["STAGE_FILE"])
with open(path, encoding="utf-8") as handle:
    print(f"processing: {handle.read().strip()}")
