"""certfleet.shared: what the agent and the coordinator both need.

Modules: :mod:`pki` (keys, CSRs, certificates), :mod:`jws` (typed EdDSA JWTs),
:mod:`connection` (https-only coordinator URLs, connection failures in one line),
:mod:`workorder` (signed work orders), :mod:`agent_token` (agent request tokens),
:mod:`wire` (messages), :mod:`targets` (deployment targets), :mod:`api` (the
operation catalogue), :mod:`logs` (log output).
"""

__all__ = ["agent_token", "api", "connection", "jws", "logs", "paths", "pki", "targets", "wire", "workorder"]
