"""flwd.engine package."""
