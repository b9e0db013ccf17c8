"""flwd's terminal UI (`flwd tui`): a Textual app for operators that talks only to the
HTTP API through `flwd.client.FlwdClient`, so it works against a remote server as well as
the one running on the local data dir."""
