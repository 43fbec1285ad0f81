"""`tether serve`: the HTTP server (REST API, plugin routes, MCP gateway, dashboard)."""
