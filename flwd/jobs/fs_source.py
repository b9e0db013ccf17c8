"""The built-in `fs` source type (filled in by the jobs work)."""
