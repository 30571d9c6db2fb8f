"""Wire messages: strict decoding (unknown fields are errors) and the validation rules
of deploy targets and certificate requests."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from certfleet.shared import wire
from certfleet.shared.pki import KeyType

MESSAGES = sorted(
    (value for name in wire.__all__ if isinstance(value := getattr(wire, name), type)
     and issubclass(value, msgspec.Struct)),
    key=lambda cls: cls.__name__,
)
STRICT = [cls for cls in MESSAGES if cls.__struct_config__.forbid_unknown_fields]

# Field values the generic example builder cannot guess (validated beyond their type).
_FIELD_VALUES: dict[str, Any] = {
    "directory": "/etc/tls/example", "common_name": "www.example.com", "certificate_path": "/etc/tls/cert.pem",
    "key_path": "/etc/tls/key.pem", "dynamic_config_path": "/etc/traefik/dynamic/tls.yaml",
    "sds_path": "/etc/envoy/sds.json", "path": "/opt/app/keystore.p12", "ranges": ["192.0.2.0/24"],
}
_CLASS_EXTRAS: dict[type, dict[str, Any]] = {wire.BulkRevokeRequest: {"tag": "web"},
                                             wire.FileTarget: {"directory": "/etc/tls/example"},
                                             wire.DiscoveredCertificate: {"not_before": "2026-01-01T00:00:00Z",
                                                                          "not_after": "2026-04-01T00:00:00Z"},
                                             wire.CertificateCreate: {"target_id": "web-frontend"}}


def _example(info: mi.Type, field: str = "") -> Any:
    """A smallest valid builtin value for a msgspec type."""
    if field in _FIELD_VALUES:
        return _FIELD_VALUES[field]
    match info:
        case mi.StructType():
            return _struct_example(info)
        case mi.StrType():
            return "a" * max(info.min_length or 1, 1)
        case mi.IntType():
            return info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else 0)
        case mi.FloatType():
            return 0.0
        case mi.BoolType():
            return False
        case mi.NoneType():
            return None
        case mi.UnionType():
            return _example(info.types[0], field)
        case mi.ListType() | mi.SetType() | mi.FrozenSetType() | mi.VarTupleType():
            return [_example(info.item_type)] * (info.min_length or 0)
        case mi.DictType():
            return {}
        case mi.EnumType():
            return next(iter(info.cls)).value
        case mi.LiteralType():
            return info.values[0]
        case mi.AnyType():
            return {}
    raise AssertionError(f"no example for {info!r}")


def _struct_example(info: mi.StructType) -> dict[str, Any]:
    value = {f.encode_name: _example(f.type, f.name) for f in info.fields if f.required}
    if info.tag_field is not None:
        value[info.tag_field] = info.tag
    value.update(_CLASS_EXTRAS.get(info.cls, {}))
    return value


def _valid(cls: type) -> dict[str, Any]:
    return _struct_example(mi.type_info(cls))


def test_every_wire_message_forbids_unknown_fields():
    assert MESSAGES, "wire exports no messages?"
    assert [cls.__name__ for cls in MESSAGES if cls not in STRICT] == []


@pytest.mark.parametrize("cls", STRICT, ids=lambda cls: cls.__name__)
def test_smallest_valid_message_decodes(cls):
    decoded = wire.decode(json.dumps(_valid(cls)).encode(), cls)
    assert isinstance(decoded, cls)
    assert wire.decode(wire.encode(decoded), cls) == decoded


@pytest.mark.parametrize("cls", STRICT, ids=lambda cls: cls.__name__)
def test_message_with_an_unknown_field_is_refused(cls):
    data = {**_valid(cls), "unexpected_setting": True}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        wire.decode(json.dumps(data).encode(), cls)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(data, cls)


def _nested_struct_fields(cls: type) -> list[str]:
    return [f.encode_name for f in mi.type_info(cls).fields
            if f.required and isinstance(f.type, mi.StructType)]


NESTED = [(cls, name) for cls in STRICT for name in _nested_struct_fields(cls)]


@pytest.mark.parametrize(("cls", "field"), NESTED, ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_unknown_field_inside_a_nested_message_is_refused(cls, field):
    data = _valid(cls)
    data[field] = {**data[field], "unexpected_setting": True}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        wire.decode(json.dumps(data).encode(), cls)


def test_decode_refuses_invalid_json_and_wrong_types():
    with pytest.raises(msgspec.DecodeError):
        wire.decode(b"{not json", wire.Health)
    with pytest.raises(msgspec.ValidationError):
        wire.decode(b'{"status": 1}', wire.Health)
    with pytest.raises(msgspec.ValidationError):
        wire.decode(b"[]", wire.Health)


# --- FileTarget ------------------------------------------------------------------------


def _target(**fields) -> bytes:
    return json.dumps({"kind": "file", "directory": "/etc/tls/web", **fields}).encode()


def test_file_target_defaults_keep_the_key_private():
    target = wire.decode(_target(), wire.FileTarget)
    assert (target.mode, target.key_mode) == (0o644, 0o600)
    assert target.owner is None and target.reload_command is None


@pytest.mark.parametrize("directory", ["/etc/tls/web", "/etc/tls/web/", "/srv", "/a-b/c_d/e.f"])
def test_file_target_accepts_absolute_normalized_directories(directory):
    wire.decode(_target(directory=directory), wire.FileTarget).validate()


@pytest.mark.parametrize(
    "directory",
    ["etc/tls", "./tls", "tls", "../etc", "/etc/../root", "/etc/tls/..", "/etc/./tls", "/etc//tls",
     "/etc/tls\x00/x", "~/tls", ""],
)
def test_file_target_refuses_relative_or_unnormalized_directories(directory):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(directory=directory), wire.FileTarget)
    if directory:
        with pytest.raises(msgspec.ValidationError):
            wire.FileTarget(directory=directory).validate()


@pytest.mark.parametrize("key_mode", [0o600, 0o400, 0o700, 0o000])
def test_file_target_accepts_owner_only_key_modes(key_mode):
    wire.decode(_target(key_mode=key_mode), wire.FileTarget)


@pytest.mark.parametrize("key_mode", [0o640, 0o604, 0o660, 0o644, 0o601, 0o610, 0o777])
def test_file_target_refuses_key_modes_granting_group_or_other(key_mode):
    with pytest.raises(msgspec.ValidationError, match="key_mode"):
        wire.decode(_target(key_mode=key_mode), wire.FileTarget)
    with pytest.raises(msgspec.ValidationError, match="key_mode"):
        wire.FileTarget(directory="/etc/tls", key_mode=key_mode).validate()


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755])
def test_file_target_refuses_modes_outside_permission_bits(mode):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(mode=mode), wire.FileTarget)
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(key_mode=mode), wire.FileTarget)


def test_file_target_accepts_a_reload_argv():
    target = wire.decode(_target(reload_command=["systemctl", "reload", "nginx"]), wire.FileTarget)
    assert target.reload_command == ["systemctl", "reload", "nginx"]


@pytest.mark.parametrize(
    "argv",
    [[], [""], ["systemctl", ""], "systemctl reload nginx", [["systemctl"]], [1, 2], ["a"] * 65,
     ["nginx", "-s", "re\x00load"]],
)
def test_file_target_refuses_bad_reload_argv(argv):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(reload_command=argv), wire.FileTarget)


@pytest.mark.parametrize("account", ["-root", "ro ot", "root:root", "", "a" * 65, "r/oot"])
def test_file_target_refuses_bad_owner_and_group(account):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(owner=account), wire.FileTarget)
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_target(group=account), wire.FileTarget)


def test_file_target_may_name_a_certificate_file_and_a_key_file_instead():
    target = wire.decode(json.dumps({"kind": "file", "certificate_path": "/etc/app/tls.crt",
                                     "key_path": "/etc/app/tls.key"}).encode(), wire.FileTarget)
    assert (target.directory, target.certificate_path, target.key_path) == \
        (None, "/etc/app/tls.crt", "/etc/app/tls.key")


@pytest.mark.parametrize("fields", [
    {},
    {"directory": "/etc/tls", "certificate_path": "/etc/tls/a.pem", "key_path": "/etc/tls/a.key"},
    {"certificate_path": "/etc/tls/a.pem"},
    {"directory": "/etc/tls", "key_path": "/etc/tls/a.key"},
    {"certificate_path": "/etc/tls/a.pem", "key_path": "/etc/tls/a.pem"},
    {"certificate_path": "etc/tls/a.pem", "key_path": "/etc/tls/a.key"},
    {"certificate_path": "/etc/tls/a.pem", "key_path": "/etc/tls/$(id).key"},
], ids=["neither", "both", "no-key-path", "key-path-with-directory", "same-file", "relative", "shell"])
def test_file_target_refuses_a_half_or_double_layout(fields):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(json.dumps({"kind": "file", **fields}).encode(), wire.FileTarget)


def test_file_target_refuses_another_kind_tag():
    with pytest.raises(msgspec.ValidationError):
        wire.decode(json.dumps({"kind": "f5", "directory": "/etc/tls"}).encode(), wire.FileTarget)


# --- CertificateCreate -------------------------------------------------------------------


def _create(**fields) -> bytes:
    data = {"common_name": "www.example.com", "agent_id": "agent-1",
            "target": {"kind": "file", "directory": "/etc/tls/web"}, **fields}
    return json.dumps(data).encode()


def test_certificate_create_names_are_canonical_with_the_cn_first():
    created = wire.decode(_create(common_name="WWW.Example.com.", sans=["api.example.com", "www.example.com",
                                                                         "2001:DB8::1"]), wire.CertificateCreate)
    assert created.names() == ("www.example.com", "api.example.com", "2001:db8::1")
    assert created.key_type is KeyType.EC_P256 and created.profile == "default"


@pytest.mark.parametrize(
    "fields",
    [
        {"common_name": "bad_name.example.com"},
        {"common_name": "*.com"},
        {"common_name": "www.*.example.com"},
        {"common_name": "exa mple.com"},
        {"common_name": ""},
        {"common_name": "a" * 254},
        {"sans": ["ok.example.com", "-bad.example.com"]},
        {"sans": ["a..example.com"]},
        {"sans": [""]},
        {"sans": [f"h{i}.example.com" for i in range(100)]},
    ],
)
def test_certificate_create_refuses_bad_names(fields):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_create(**fields), wire.CertificateCreate)


def test_certificate_create_validate_refuses_bad_names_on_a_constructed_message():
    created = wire.CertificateCreate(common_name="bad_name", agent_id="a",
                                     target=wire.FileTarget(directory="/etc/tls"))
    with pytest.raises(msgspec.ValidationError):
        created.validate()


def test_certificate_create_validates_its_target():
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_create(target={"kind": "file", "directory": "relative"}), wire.CertificateCreate)
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_create(target={"kind": "file", "directory": "/etc", "key_mode": 0o644}),
                    wire.CertificateCreate)


@pytest.mark.parametrize("fields", [{"key_type": "rsa-1024"}, {"lifetime_seconds": 299},
                                    {"lifetime_seconds": 398 * 86400 + 1}, {"agent_id": ""},
                                    {"tags": [""]}, {"profile": "p" * 65}])
def test_certificate_create_refuses_out_of_range_settings(fields):
    with pytest.raises(msgspec.ValidationError):
        wire.decode(_create(**fields), wire.CertificateCreate)


def test_certificate_create_accepts_the_maximum_name_count():
    sans = [f"h{i}.example.com" for i in range(99)]
    assert len(wire.decode(_create(sans=sans), wire.CertificateCreate).names()) == 100


# --- other validated messages --------------------------------------------------------------


def test_grant_scope_id_is_required_exactly_for_narrow_scopes():
    base = {"principal_type": "api-key", "principal_id": "k1", "role": "viewer"}
    wire.decode(json.dumps(base).encode(), wire.GrantCreate)
    wire.decode(json.dumps({**base, "scope_type": "profile", "scope_id": "p1"}).encode(), wire.GrantCreate)
    for bad in ({"scope_type": "profile"}, {"scope_type": "global", "scope_id": "p1"}):
        with pytest.raises(msgspec.ValidationError):
            wire.decode(json.dumps({**base, **bad}).encode(), wire.GrantCreate)


def test_bulk_revoke_needs_a_filter():
    with pytest.raises(msgspec.ValidationError):
        wire.decode(b"{}", wire.BulkRevokeRequest)
    assert wire.decode(b'{"agent": "a1"}', wire.BulkRevokeRequest).agent == "a1"
