"""Jobs: discovery of job folders, the catalog, hot reload and argument validation.

Entry points for other layers: `flwd.jobs.registry.JobRegistry` (owns the current
`flwd.jobs.catalog.Catalog` and the watchers), `flwd.jobs.arguments` (`validate_args`,
`mask_secrets`, `secret_values`) and `flwd.jobs.views` (the API's JSON shapes of a job).
Source types for plugins are in `flwd.jobs.sources`. docs/jobs.md describes the format.
"""
