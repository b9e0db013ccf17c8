"""flwd.api package."""
