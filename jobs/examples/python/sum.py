"""Add up the `numbers` argument and return the total as the step's result."""

import json
import os

with open(os.environ["FLWD_ARGS_FILE"], encoding="utf-8") as handle:
    args = json.load(handle)
numbers = args.get("numbers", [])
total = sum(numbers)
print(f"{args.get('label', 'total')}: {total} ({len(numbers)} numbers)")
result_file = os.environ.get("FLWD_RESULT_FILE")
if result_file:
    with open(result_file, "w", encoding="utf-8") as handle:
        json.dump({"total": total, "count": len(numbers)}, handle)
