"""flwd.commands package."""
