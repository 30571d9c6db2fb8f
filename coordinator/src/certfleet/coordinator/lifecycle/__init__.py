"""The certificate lifecycle: when to renew, and the jobs that do it."""
