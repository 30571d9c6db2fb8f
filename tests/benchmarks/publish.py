"""docs/reference/performance.md: how to reproduce, what each benchmark times, and the
latest report (``python -m tests.benchmarks --publish``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["publish"]

INTRO = """\
# Performance

The numbers below come from `make bench` (the benchmarks in `tests/benchmarks`), run
on the machine described in the report. Machines are shared and noisy, so every
figure is printed next to a **baseline measured in the same run** and the ratio of
the two; compare ratios between runs, not absolute numbers.

## Reproduce

```sh
make bench                        # about 16 minutes on 2 cores, plus installing on a fresh machine
make bench BENCH_ARGS=--quick     # a few minutes, small sizes: checks that everything runs
make bench BENCH_ARGS=--publish   # also rewrites this page with the new report
.venv/bin/python -m tests.benchmarks --only issuance,ocsp --backends sqlite   # a subset
```

`make bench` works on a fresh Debian machine like `make test`: it creates `.venv`,
installs `tests/benchmarks/requirements.txt` (py-spy), makes sure `openssl` is
installed and PostgreSQL answers on `127.0.0.1:5432` (`POSTGRES_URL=…` for another
server; each benchmark creates a database of its own and drops it). It prints a table
of every figure and writes `bench-results/bench-<time>.json` and `.md` (and
`latest.json`, `latest.md`); py-spy's raw profiles go to `bench-results/profiles/`.
The folder is git-ignored. The test suite never asserts speed; this is where speed and
memory are measured.

## What is measured

Everything runs over real protocols on loopback: the coordinator is `certfleet serve`
in a process of its own (HTTPS, TLS 1.3 only, plus the plain-HTTP PKI listener), the
agent footprint uses `certfleet-agent run`, and the simulated agents speak the agent
protocol with real Ed25519 request signatures, real work-order verification and real
CSRs. CPU and RSS are read from `/proc`; CPU includes the database threads (SQLite's
writer, PostgreSQL's pool workers).

| benchmark | what is timed | baselines |
|---|---|---|
| Issuance | `POST /api/v1/agent/orders/{id}/csr` from 40 simulated agents (one TLS connection each, 50 CSRs each, EC P-256); an answer means certificate, order, job and audit row are committed. Certificates, orders and CSRs are made beforehand. | raw `cryptography` build-and-sign in the bench process; `GET /health` (the most trivial JSON endpoint: one `SELECT 1`) and `GET /.well-known/certfleet/ca.pem` (no authentication, no database) from the same clients; the goal of 1,000/s |
| Polling | 1,000 and 10,000 simulated agents long-polling (`wait=25`, each starting as soon as it is connected, first polls spread over the wait), one TLS connection each from one trio process; a size is *held* when no request fails, every dispatched order arrives and the p99 overrun stays under 5 s: long-poll overrun past `wait`, `wait=0` probe latency (10 probe agents), dispatch latency (from sending `certificates.create` to the agent holding the signed order), coordinator CPU and RSS per connected agent | the same probes with an idle fleet; the bench client's own CPU per simulated agent for the same connections; the idle coordinator's RSS |
| Renewal storm | 10,000 deployed certificates, 10 on each of 1,000 agents (hosts serving several names), made due at once. First the agents connect and deploy them (the first wave), then their renewal time is set to now in the database and the coordinator's scheduler starts the renewals and wakes the agents, which answer with new keys and real CSRs; time until all are issued and all are reported deployed; duplicate jobs, orders or versions counted per certificate in the database against the counts before the storm. (With 10,000 agents connected, the idle long polls alone saturate one coordinator process here: see the polling figures; the storm would measure them, not the renewal.) | the same number ÷ the issuance benchmark's rate on the same backend |
| OCSP | pre-signed responses per second (no nonce), GET and POST, over HTTPS and over the plain-HTTP PKI listener, 16 keep-alive clients | `openssl ocsp -index … -port` with the same certificates and the coordinator's own responder key, plain HTTP |
| CRL | generation time at 1k, 10k and 100k revoked entries (the stored CRL is removed and `GET …/crl/issuing` rebuilds it); revoke-call latency at each size, paced so the debounced rebuild overlaps them. Entries beyond the real revocations are seeded into the database | raw `cryptography` CRL build-and-sign with the same entries, handed to the builder as one list; revoke latency with an empty CRL |
| Agent footprint | RSS and CPU of an idle enrolled `certfleet-agent run` over 60 s; peak RSS and time of a discovery scan (`certfleet.agent.discovery.scan`) of 1,000 PEM files | a minimal long-poller process; a bare Python interpreter; the scanning process before the scan; plain `cryptography` loading the same files |

"""


FINDINGS_START = "<!-- findings: kept by --publish -->"
FINDINGS_END = "<!-- /findings -->"


def publish(path: Path, report: str) -> Path:
    """Rewrite ``path`` with the introduction, the findings written by hand (kept from
    the current page, between the markers) and ``report`` (the markdown report, its
    title demoted one level)."""
    findings = ""
    if path.exists():
        current = path.read_text()
        if FINDINGS_START in current and FINDINGS_END in current:
            start = current.index(FINDINGS_START)
            findings = current[start:current.index(FINDINGS_END) + len(FINDINGS_END)] + "\n\n"
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in report.splitlines())
    body = body.replace("## Benchmark report", "## Latest report", 1)
    path.write_text(INTRO + findings + body.rstrip() + "\n")
    return path
