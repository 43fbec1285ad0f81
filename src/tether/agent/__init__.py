"""The agent loop that plugins extend: providers, sessions, and the hook pipeline."""
