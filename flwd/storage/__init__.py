"""flwd.storage package."""
