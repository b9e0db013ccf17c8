"""flwd.events package."""
