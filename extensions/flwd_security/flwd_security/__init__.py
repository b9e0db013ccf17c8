"""flwd's security extension: profiles, bearer tokens, scopes, tenants, rate limits,
sandboxed steps and the audit log, built only on the hooks of `flwd.hookspecs`.

Disable it with `--disable-extension security` (or uninstall the package): the core's
defaults then apply — anyone may do anything — and `flwd serve` binds to loopback only.
"""
