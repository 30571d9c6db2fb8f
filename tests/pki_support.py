"""PKI helpers for tests: an external root made with the openssl CLI, issuing a
certificate through an in-process agent."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, input=input, timeout=60)


def openssl_root(directory: Path, name: str = "External Root") -> tuple[Path, Path]:
    """A self-signed root CA made entirely by the openssl CLI (as an enterprise CA would)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "root.key", directory / "root.pem"
    completed = run_openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", str(key), "-out", str(cert), "-days", "3650", "-subj", f"/O=Elsewhere/CN={name}",
                            "-addext", "basicConstraints=critical,CA:TRUE",
                            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    assert completed.returncode == 0, completed.stderr
    return cert, key


def openssl_sign_ca(directory: Path, csr_pem: str, root_cert: Path, root_key: Path, *,
                    key_usage: str = "critical,keyCertSign,cRLSign") -> str:
    """Sign a CA CSR with the external root, as its operator would."""
    csr, ext, out = directory / "sub.csr", directory / "sub.ext", directory / "sub.pem"
    csr.write_text(csr_pem)
    ext.write_text("\n".join([
        "basicConstraints=critical,CA:TRUE,pathlen:0",
        f"keyUsage={key_usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid",
    ]) + "\n")
    completed = run_openssl("x509", "-req", "-in", str(csr), "-CA", str(root_cert), "-CAkey", str(root_key),
                            "-CAcreateserial", "-out", str(out), "-days", "1825", "-sha256", "-extfile", str(ext))
    assert completed.returncode == 0, completed.stderr
    return out.read_text()


async def issue_through_agent(api, agent, names: list[str], target: Path, *, profile: str = "default", **extra):
    """Create a certificate, let the in-process agent execute the order once, and
    return the certificate's info."""
    from certfleet.shared import wire

    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name=names[0], sans=names[1:], agent_id=agent.config.agent_id, profile=profile,
        target=wire.FileTarget(directory=str(target)), **extra))
    await agent.poll_once()
    await agent.flush_outbox()
    return await api.call("certificates.get", certificate_id=created.id)


async def run_openssl_async(*args: str) -> subprocess.CompletedProcess:
    """For openssl commands that talk to the in-process coordinator: the event loop
    must keep serving while openssl waits for the answer."""
    import trio

    return await trio.run_process(["openssl", *args], capture_stdout=True, capture_stderr=True, check=False)
