"""Job source types: how a configured source is scanned and watched (filled in by the jobs work)."""
