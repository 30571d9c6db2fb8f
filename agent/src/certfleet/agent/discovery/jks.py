"""Listing Java keystores (JKS, JCEKS) with the JDK's own ``keytool -list -rfc``.

The certificates of a JKS store are not encrypted — the store password only protects
its integrity check and the private keys — so keytool lists them without a password.
If a store will not list that way, each password the caller gave is tried, handed to
keytool through its environment (``-storepass:env``), never its argument list, which
any local user can read. keytool reads the file through a descriptor the scan already
opened and checked, so a file swapped for a FIFO in between cannot stall it.
"""

from __future__ import annotations

import binascii
import os
import shutil
import subprocess
from collections.abc import Sequence

from cryptography import x509

from .describe import certificate_facts
from .formats import pem_blocks
from .records import ParsedFile, ProblemKind, digest_passwords

__all__ = ["keytool_path", "list_java_keystore"]

_PASSWORD_VARIABLE = "CERTFLEET_DISCOVERY_STOREPASS"
_ENGLISH = ("-J-Duser.language=en", "-J-Duser.country=US")  # the listing is parsed by its labels
_OUTPUT_LIMIT = 16 * 1024 * 1024


def keytool_path() -> str | None:
    return shutil.which("keytool")


def _listing(keytool: str, fd: int, password: str | None, timeout: float) -> str | None:
    argv = [keytool, "-list", "-rfc", *_ENGLISH, "-keystore", f"/dev/fd/{fd}"]
    environment = dict(os.environ)
    if password is not None:
        argv += ["-storepass:env", _PASSWORD_VARIABLE]
        environment[_PASSWORD_VARIABLE] = password
    os.lseek(fd, 0, os.SEEK_SET)  # where /dev/fd shares the offset (BSD, macOS) keytool reads from the start
    completed = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                               pass_fds=(fd,), env=environment, check=False)
    if completed.returncode != 0:
        return None
    return completed.stdout[:_OUTPUT_LIMIT].decode("utf-8", errors="replace")


def _parse_listing(text: str) -> ParsedFile:
    """Certificates in listing order; the first certificate of a ``PrivateKeyEntry``
    chain is the one whose key the entry holds."""
    facts = []
    position = 0
    for section in text.split("Alias name:")[1:]:
        holds_key = "Entry type: PrivateKeyEntry" in section
        for index, (_, _, body) in enumerate(pem_blocks(section.encode())):
            try:
                certificate = x509.load_der_x509_certificate(binascii.a2b_base64(body))
                facts.append(certificate_facts(certificate, position=position, format="jks",
                                               key_in_file=holds_key and index == 0))
            except (ValueError, binascii.Error):
                pass
            position += 1
    return ParsedFile(certificates=tuple(facts))


def list_java_keystore(fd: int, *, passwords: Sequence[str], timeout: float,
                       keytool: str | None) -> ParsedFile:
    """The certificates of the Java keystore open on ``fd``.

    Never raises for a keystore keytool cannot read: the outcome is a problem in the
    returned :class:`ParsedFile` (keytool missing, timing out, or refusing every
    password); only the last of these is cached, for as long as the passwords stay."""
    if keytool is None:
        return ParsedFile(problems=((ProblemKind.KEYTOOL_MISSING,
                                     "a Java keystore; keytool is not on PATH, so its certificates were not read"),),
                          cacheable=False)
    encoded = [password.encode() for password in passwords]
    for password in (None, *passwords):
        try:
            text = _listing(keytool, fd, password, timeout)
        except subprocess.TimeoutExpired:
            return ParsedFile(problems=((ProblemKind.KEYTOOL_FAILED, f"keytool gave no answer within {timeout:.0f}s"),),
                              cacheable=False)
        except OSError as exc:
            return ParsedFile(problems=((ProblemKind.KEYTOOL_FAILED, f"cannot run keytool: {exc.strerror or exc}"),),
                              cacheable=False)
        if text is not None:
            parsed = _parse_listing(text)
            if password is None:
                return parsed
            return ParsedFile(certificates=parsed.certificates, passwords_digest=digest_passwords(encoded))
    return ParsedFile(problems=((ProblemKind.ENCRYPTED, "Java keystore, keytool lists it with no given password"),),
                      passwords_digest=digest_passwords(encoded))
