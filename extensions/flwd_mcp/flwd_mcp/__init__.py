"""flwd's MCP extension: every job of the catalogue is a tool for AI agents."""
