"""Keys, subject names and CSRs: what certfleet generates, and what it refuses."""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from certfleet.shared import pki

FUZZ = settings(derandomize=True, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _key(key_type: pki.KeyType):
    return pki.generate_private_key(key_type)


@functools.cache
def _p256():
    return ec.generate_private_key(ec.SECP256R1())


def _pem(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE REQUEST-----\n"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def _csr(subject: list[x509.NameAttribute], sans: list[x509.GeneralName] | None = None, key=None) -> bytes:
    key = key or _p256()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _cn(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


# --- keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(pki.KeyType))
def test_generated_key_is_classified_as_its_own_type(key_type):
    key = _key(key_type)
    assert pki.key_type_of(key.public_key()) is key_type


@pytest.mark.parametrize("key_type", list(pki.KeyType))
def test_private_key_pem_round_trips(key_type):
    key = _key(key_type)
    loaded = pki.load_private_key(pki.private_key_pem(key))
    assert pki.private_key_pem(loaded) == pki.private_key_pem(key)
    assert pki.key_type_of(loaded.public_key()) is key_type


def test_key_type_accepts_its_string_value():
    assert pki.key_type_of(pki.generate_private_key("ec-p256").public_key()) is pki.KeyType.EC_P256


def test_unknown_key_type_name_is_refused():
    with pytest.raises(ValueError):
        pki.generate_private_key("rsa-1024")


@functools.cache
def _unsupported_keys():
    return {
        "rsa-1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "secp521r1": ec.generate_private_key(ec.SECP521R1()),
        "secp256k1": ec.generate_private_key(ec.SECP256K1()),
        "ed448": ed448.Ed448PrivateKey.generate(),
        "dsa-2048": dsa.generate_private_key(key_size=2048),
    }


@pytest.mark.parametrize("name", ["rsa-1024", "secp521r1", "secp256k1", "ed448", "dsa-2048"])
def test_unsupported_key_is_refused_everywhere(name):
    key = _unsupported_keys()[name]
    with pytest.raises(ValueError):
        pki.key_type_of(key.public_key())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with pytest.raises(ValueError):
        pki.load_private_key(pem)
    algorithm = None if name == "ed448" else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([_cn("example.com")]))
           .sign(key, algorithm).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(pki.CsrError):
        pki.parse_csr(csr)


def test_key_type_of_refuses_non_keys():
    with pytest.raises(ValueError):
        pki.key_type_of("not a key")


def test_public_key_matches_only_its_own_key():
    key, other = _key(pki.KeyType.EC_P256), _p256()
    csr = pki.parse_csr(pki.build_csr(key, ["example.com"])).csr
    certificate = (
        x509.CertificateBuilder().subject_name(csr.subject).issuer_name(csr.subject)
        .public_key(csr.public_key()).serial_number(1)
        .not_valid_before(datetime.datetime(2024, 1, 1))
        .not_valid_after(datetime.datetime(2034, 1, 1))
        .sign(key, hashes.SHA256())
    )
    assert pki.public_key_matches(certificate, key)
    assert not pki.public_key_matches(certificate, other)
    fingerprint = pki.certificate_fingerprint(certificate)
    assert len(fingerprint) == 64 and fingerprint == fingerprint.lower()
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    assert [pki.certificate_fingerprint(c) for c in pki.load_certificates(pem * 2)] == [fingerprint] * 2


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("WWW.Example.COM", "www.example.com"),
        ("example.com.", "example.com"),
        ("*.Example.com", "*.example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("a-b.example.com", "a-b.example.com"),
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:0db8::0001", "2001:db8::1"),
        ("::FFFF:192.0.2.1", "::ffff:c000:201"),
        ("spiffe://example.org/ns/web", "spiffe://example.org/ns/web"),
    ],
)
def test_normalize_name_returns_canonical_form(given, canonical):
    assert pki.normalize_name(given) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "*",
        "*.com",  # a wildcard needs at least two labels under it
        "www.*.example.com",  # only the leftmost label may be a wildcard
        "*.*.example.com",
        "*www.example.com",
        "w*w.example.com",
        "**.example.com",
        "-lead.example.com",
        "trail-.example.com",
        "under_score.example.com",
        "a..example.com",
        ".example.com",
        "sp ace.example.com",
        "bücher.example",
        "x" * 64 + ".example.com",
        "exa$mple.com",
        "example.com/",
        "spiffe://Example.org/ns",
        "spiffe://example.org/ns/",
        "spiffe://example.org:443/ns",
    ],
)
def test_normalize_name_refuses_malformed_names(bad):
    with pytest.raises(pki.NameError_):
        pki.normalize_name(bad)


@pytest.mark.parametrize("bad", [None, 42, b"example.com"])
def test_normalize_name_refuses_non_strings(bad):
    with pytest.raises(pki.NameError_):
        pki.normalize_name(bad)


def _long_name(length: int) -> str:
    labels, remaining = [], length
    while remaining > 0:
        size = min(63, remaining)
        labels.append("a" * size)
        remaining -= size + 1
    name = ".".join(labels)
    return name[:length]


def test_normalize_name_accepts_253_characters_and_63_character_labels():
    name = _long_name(253)
    assert len(name) == 253 and max(len(label) for label in name.split(".")) == 63
    assert pki.normalize_name(name) == name


def test_normalize_name_refuses_more_than_253_characters():
    name = _long_name(254)
    assert len(name) == 254
    with pytest.raises(pki.NameError_):
        pki.normalize_name(name)
    with pytest.raises(pki.NameError_):
        pki.normalize_name("a." * 2000 + "com")


def test_normalize_name_refuses_more_than_one_trailing_dot():
    with pytest.raises(pki.NameError_):
        pki.normalize_name("example.com..")


def test_normalize_name_refuses_non_ascii_that_lowercases_to_ascii():
    with pytest.raises(pki.NameError_):
        pki.normalize_name("\u212a.example.com")


def test_normalize_names_deduplicates_keeping_the_first_position():
    assert pki.normalize_names(["B.example.com", "a.example.com", "b.example.com.", "192.0.2.1"]) == (
        "b.example.com", "a.example.com", "192.0.2.1")


def test_normalize_names_requires_one_and_at_most_max_names():
    with pytest.raises(pki.NameError_):
        pki.normalize_names([])
    names = [f"h{i}.example.com" for i in range(pki.MAX_NAMES)]
    assert len(pki.normalize_names(names)) == pki.MAX_NAMES
    with pytest.raises(pki.NameError_):
        pki.normalize_names([*names, "one-more.example.com"])


def test_general_name_picks_dns_ip_or_uri():
    assert pki.general_name("example.com") == x509.DNSName("example.com")
    assert pki.general_name("2001:db8::1") == x509.IPAddress(ipaddress.ip_address("2001:db8::1"))
    assert pki.general_name("spiffe://example.org/a") == x509.UniformResourceIdentifier("spiffe://example.org/a")


# --- CSRs ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(pki.KeyType))
def test_build_csr_round_trips_through_parse_csr(key_type):
    key = _key(key_type)
    pem = pki.build_csr(key, ["WWW.Example.com", "api.example.com", "192.0.2.7", "2001:DB8::7"])
    parsed = pki.parse_csr(pem)
    assert parsed.key_type is key_type
    assert parsed.common_name == "www.example.com"
    assert parsed.names == {"www.example.com", "api.example.com", "192.0.2.7", "2001:db8::7"}
    san = parsed.csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7"),
                                                       ipaddress.ip_address("2001:db8::7")]
    assert pki.parse_csr(pem.decode()).names == parsed.names


def test_build_csr_with_only_a_spiffe_id_has_an_empty_subject():
    parsed = pki.parse_csr(pki.build_csr(_key(pki.KeyType.EC_P256), ["spiffe://example.org/ns/web"]))
    assert parsed.common_name is None
    assert parsed.names == {"spiffe://example.org/ns/web"}


def test_build_csr_refuses_bad_names():
    with pytest.raises(pki.NameError_):
        pki.build_csr(_key(pki.KeyType.EC_P256), ["bad_name.example.com"])
    with pytest.raises(pki.NameError_):
        pki.build_csr(_key(pki.KeyType.EC_P256), [])


def test_parse_csr_normalizes_names_from_cn_and_san():
    pem = _csr([_cn("WWW.Example.COM")], [x509.DNSName("Api.Example.com"),
                                          x509.IPAddress(ipaddress.ip_address("2001:db8:0::1"))])
    parsed = pki.parse_csr(pem)
    assert parsed.common_name == "www.example.com"
    assert parsed.names == {"www.example.com", "api.example.com", "2001:db8::1"}


def test_parse_csr_accepts_a_csr_with_only_a_cn():
    parsed = pki.parse_csr(_csr([_cn("example.com")]))
    assert parsed.names == {"example.com"} and parsed.common_name == "example.com"


@pytest.mark.parametrize("garbage", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE"
                                     b" REQUEST-----\n", "\u00e9t\u00e9", b"\x00" * 100])
def test_parse_csr_refuses_garbage(garbage):
    with pytest.raises(pki.CsrError):
        pki.parse_csr(garbage)


def test_parse_csr_refuses_a_der_csr():
    with pytest.raises(pki.CsrError):
        pki.parse_csr(_der(pki.build_csr(_key(pki.KeyType.EC_P256), ["example.com"])))


def test_parse_csr_refuses_a_certificate_pem():
    key = _key(pki.KeyType.EC_P256)
    name = x509.Name([_cn("example.com")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(datetime.datetime(2024, 1, 1))
                   .not_valid_after(datetime.datetime(2034, 1, 1)).sign(key, hashes.SHA256()))
    with pytest.raises(pki.CsrError):
        pki.parse_csr(certificate.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("key_type", list(pki.KeyType))
def test_parse_csr_refuses_a_tampered_signature(key_type):
    der = bytearray(_der(pki.build_csr(_key(key_type), ["example.com"])))
    der[-1] ^= 0x01  # the last byte of the signature value
    with pytest.raises(pki.CsrError, match="signature"):
        pki.parse_csr(_pem(bytes(der)))


def test_parse_csr_refuses_a_csr_whose_signed_content_was_changed():
    pem = pki.build_csr(_key(pki.KeyType.EC_P256), ["aaaa.example.com"])
    der = _der(pem)
    tampered = der.replace(b"aaaa.example.com", b"bbbb.example.com")
    assert tampered != der
    with pytest.raises(pki.CsrError, match="signature"):
        pki.parse_csr(_pem(tampered))


def test_parse_csr_refuses_oversize_input():
    pem = pki.build_csr(_key(pki.KeyType.EC_P256), ["example.com"])
    with pytest.raises(pki.CsrError, match="larger"):
        pki.parse_csr(pem + b"\n" * (64 * 1024))
    with pytest.raises(pki.CsrError, match="larger"):
        pki.parse_csr(pem, max_bytes=len(pem) - 1)
    assert pki.parse_csr(pem, max_bytes=len(pem)).names == {"example.com"}


def test_parse_csr_refuses_a_csr_that_names_nothing():
    with pytest.raises(pki.CsrError, match="names no subject"):
        pki.parse_csr(_csr([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")]))
    with pytest.raises(pki.CsrError, match="names no subject"):
        pki.parse_csr(_csr([]))


@pytest.mark.parametrize(
    "san",
    [
        x509.RFC822Name("admin@example.com"),
        x509.UniformResourceIdentifier("https://example.com/"),
        x509.DirectoryName(x509.Name([_cn("example.com")])),
        x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
    ],
)
def test_parse_csr_refuses_unsupported_san_types(san):
    with pytest.raises(pki.CsrError, match="unsupported name type"):
        pki.parse_csr(_csr([_cn("example.com")], [x509.DNSName("example.com"), san]))


def test_parse_csr_refuses_two_common_names():
    with pytest.raises(pki.CsrError, match="more than one CN"):
        pki.parse_csr(_csr([_cn("a.example.com"), _cn("b.example.com")]))


def test_parse_csr_says_why_it_refuses_a_second_cn():
    with pytest.raises(pki.CsrError) as refused:
        pki.parse_csr(_csr([_cn("a.example.com"), _cn("b.example.com")]))
    assert "malformed" not in str(refused.value)


@pytest.mark.parametrize("cn", ["not a host name", "under_score.example.com", "*.com"])
def test_parse_csr_refuses_an_invalid_common_name(cn):
    with pytest.raises(pki.CsrError):
        pki.parse_csr(_csr([_cn(cn)], [x509.DNSName("example.com")]))


def test_parse_csr_refuses_an_invalid_dns_san():
    with pytest.raises(pki.CsrError):
        pki.parse_csr(_csr([_cn("example.com")], [x509.DNSName("bad_name.example.com")]))


def test_parse_csr_refuses_more_than_max_names():
    sans = [x509.DNSName(f"h{i}.example.com") for i in range(pki.MAX_NAMES + 1)]
    with pytest.raises(pki.CsrError, match="more than"):
        pki.parse_csr(_csr([], sans))


# --- fuzzing -------------------------------------------------------------------------

_VALID_DER = _der(pki.build_csr(_p256(), ["www.example.com", "192.0.2.1"]))
_ED25519_DER = _der(pki.build_csr(_key(pki.KeyType.ED25519), ["www.example.com"]))
# Offsets of the version and the key algorithm, whose corruption cryptography reports
# with exceptions that are not ValueErrors.
_VERSION_AT = _VALID_DER.index(b"\x02\x01\x00") + 2
_KEY_OID_AT = _VALID_DER.index(bytes.fromhex("06072a8648ce3d0201")) + 2


@FUZZ
@given(st.binary(max_size=2048) | st.binary(max_size=2048).map(_pem) | st.text(max_size=512))
def test_parse_csr_raises_only_csr_error_on_arbitrary_input(data):
    with pytest.raises(pki.CsrError):
        pki.parse_csr(data)


@FUZZ
@given(offset=st.integers(0, 63), xor=st.integers(1, 255))
def test_parse_csr_refuses_any_corruption_of_an_ed25519_signature(offset, xor):
    der = bytearray(_ED25519_DER)
    der[len(der) - 64 + offset] ^= xor
    with pytest.raises(pki.CsrError, match="signature"):
        pki.parse_csr(_pem(bytes(der)))


@FUZZ
@example(position=_VERSION_AT, xor=0x05)
@example(position=_KEY_OID_AT, xor=0x01)
@given(position=st.integers(0, len(_VALID_DER) - 1), xor=st.integers(1, 255))
def test_parse_csr_raises_only_csr_error_on_a_mutated_valid_csr(position, xor):
    der = bytearray(_VALID_DER)
    der[position] ^= xor
    try:
        parsed = pki.parse_csr(_pem(bytes(der)))
    except pki.CsrError:
        return
    # A mutation that still parses (e.g. inside the unsigned outer algorithm
    # parameters) must still yield canonical names.
    assert all(pki.normalize_name(name) == name for name in parsed.names)


def test_parse_csr_refuses_an_unknown_csr_version():
    der = bytearray(_VALID_DER)
    der[_VERSION_AT] = 0x05
    with pytest.raises(pki.CsrError):
        pki.parse_csr(_pem(bytes(der)))


def test_parse_csr_refuses_an_unknown_public_key_algorithm():
    der = bytearray(_VALID_DER)
    der[_KEY_OID_AT] ^= 0x01
    with pytest.raises(pki.CsrError):
        pki.parse_csr(_pem(bytes(der)))
