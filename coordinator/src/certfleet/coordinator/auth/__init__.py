"""Who may call the coordinator: credentials (API keys, enrollment and bootstrap
tokens), principals, roles and scoped grants (RBAC), and the failed-authentication
rate limit."""
