"""The TUI's screens: jobs, run form, runs, run, help, and the small dialogs."""
