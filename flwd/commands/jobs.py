"""`flwd jobs` and `flwd validate` (filled in by the jobs work)."""
