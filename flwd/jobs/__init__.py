"""flwd.jobs package."""
