"""The use cases, shared by the API, the CLI and background workers."""
