"""Unit tests for core.identifiers (CONTRACT section 6: normalization, hashing, blocked values)."""

from __future__ import annotations

import hashlib

import pytest

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import (
    PRIORITY,
    Identifier,
    IdentifierType,
    hash_normalized,
    is_blocked,
    normalize_email,
    normalize_identifier,
    normalize_phone,
)

# Known vectors (Meta CAPI em/ph rules).
USER_EMAIL_SHA256 = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
PHONE_16505551212_SHA256 = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- email


class TestNormalizeEmail:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("user@example.com", "user@example.com"),
            ("User@Example.COM", "user@example.com"),
            ("USER@EXAMPLE.COM", "user@example.com"),
            ("  user@example.com  ", "user@example.com"),
            ("\tUser@Example.com\n", "user@example.com"),
            ("JOSÉ@Example.COM", "josé@example.com"),
            ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
            ("a@b.c", "a@b.c"),
        ],
    )
    def test_valid(self, raw: str, expected: str) -> None:
        assert normalize_email(raw) == expected

    def test_idempotent(self) -> None:
        once = normalize_email("  Mixed.Case@Example.ORG ")
        assert normalize_email(once) == once

    @pytest.mark.parametrize(
        "raw",
        [
            "userexample.com",  # no @
            "user@@example.com",  # two @ (adjacent)
            "user@foo@example.com",  # two @
            "user@localhost",  # no dot in domain
            "us er@example.com",  # space in local part
            "user@exa mple.com",  # space in domain
            "user@example.com extra",  # space inside after trimming
            "us\ter@example.com",  # tab inside
            "@example.com",  # empty local part
            "user@",  # empty domain
            "user@.com",  # domain starts with a dot
            "user@example.",  # domain ends with a dot
            "",
            "   ",
            "@",
        ],
    )
    def test_invalid(self, raw: str) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_email(raw)
        assert exc_info.value.code == "invalid_identifier"


# --------------------------------------------------------------------------- phone


class TestNormalizePhone:
    def test_national_with_region(self) -> None:
        assert normalize_phone("(650) 555-1212", "US") == "+16505551212"

    def test_region_lowercase_accepted(self) -> None:
        assert normalize_phone("(650) 555-1212", "us") == "+16505551212"

    def test_national_other_region(self) -> None:
        assert normalize_phone("020 7946 0958", "GB") == "+442079460958"

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("+1 650 555 1212", "+16505551212"),
            ("+1 (650) 555-1212", "+16505551212"),
            ("+16505551212", "+16505551212"),
            ("  +1 650 555 1212  ", "+16505551212"),
            ("+44 20 7946 0958", "+442079460958"),
            ("0044 20 7946 0958", "+442079460958"),
            ("001 650 555 1212", "+16505551212"),
        ],
    )
    def test_international_without_region(self, raw: str, expected: str) -> None:
        assert normalize_phone(raw) == expected

    def test_international_ignores_region(self) -> None:
        # A number in international form keeps its own country code whatever the default region.
        assert normalize_phone("+44 20 7946 0958", "US") == "+442079460958"

    def test_national_without_region_is_invalid(self) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_phone("(650) 555-1212")
        assert exc_info.value.code == "invalid_identifier"
        assert "region" in exc_info.value.message

    @pytest.mark.parametrize(
        ("raw", "region"),
        [
            ("+1 555", None),  # too short
            ("+1 000 000 0000", None),  # not a valid US number
            ("+999 1234567", None),  # unassigned country code
            ("12", "US"),
            ("abc", "US"),
            ("abc", None),
            ("", "US"),
            ("555-12", "US"),
        ],
    )
    def test_invalid_numbers(self, raw: str, region: str | None) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_phone(raw, region)


# --------------------------------------------------------------------------- hashing


class TestHashNormalized:
    def test_email_vector(self) -> None:
        h = hash_normalized("email", "user@example.com")
        assert h == hashlib.sha256(b"user@example.com").hexdigest()
        assert h == USER_EMAIL_SHA256

    def test_email_vector_with_enum_type(self) -> None:
        assert hash_normalized(IdentifierType.EMAIL, "user@example.com") == USER_EMAIL_SHA256

    def test_phone_hash_drops_plus(self) -> None:
        h = hash_normalized("phone", "+16505551212")
        assert h == hashlib.sha256(b"16505551212").hexdigest()
        assert h == PHONE_16505551212_SHA256
        assert h != sha("+16505551212")

    def test_phone_hash_same_with_or_without_plus(self) -> None:
        assert hash_normalized(IdentifierType.PHONE, "+16505551212") == hash_normalized(
            IdentifierType.PHONE, "16505551212"
        )

    def test_hash_is_lowercase_hex_sha256(self) -> None:
        h = hash_normalized("device_id", "abc")
        assert len(h) == 64
        assert h == h.lower()
        int(h, 16)

    @pytest.mark.parametrize("id_type", ["external_id", "device_id", "anonymous_id"])
    def test_other_types_hash_value_verbatim(self, id_type: str) -> None:
        assert hash_normalized(id_type, "AbC-123") == sha("AbC-123")

    def test_non_ascii_hashed_as_utf8(self) -> None:
        assert (
            hash_normalized("email", "josé@example.com")
            == hashlib.sha256("josé@example.com".encode()).hexdigest()
        )


# --------------------------------------------------------------------------- blocked values

CONTRACT_BLOCKED = [
    "null",
    "none",
    "nil",
    "undefined",
    "nan",
    "true",
    "false",
    "0",
    "-1",
    "anonymous",
    "guest",
    "unknown",
    "test",
    "[object object]",
]


def _variants(value: str) -> list[str]:
    return [value, value.upper(), value.title(), f"  {value}  ", f"\t{value.upper()}\n"]


class TestIsBlocked:
    @pytest.mark.parametrize("value", [v for base in CONTRACT_BLOCKED for v in _variants(base)])
    def test_contract_list_case_and_whitespace_insensitive(self, value: str) -> None:
        assert is_blocked(value)

    @pytest.mark.parametrize(
        "value",
        [
            "  NULL ",
            "Undefined",
            "[object Object]",
            "[OBJECT OBJECT]",
            "None",
            "NaN",
            "TRUE",
            "False",
            "Guest",
            "ANONYMOUS",
            "Unknown",
            "Test",
            "Nil",
        ],
    )
    def test_brief_examples(self, value: str) -> None:
        assert is_blocked(value)

    @pytest.mark.parametrize(
        "value",
        ["", " ", "   ", "\t", "\n", " \t\r\n "],
    )
    def test_empty_or_whitespace(self, value: str) -> None:
        assert is_blocked(value)

    @pytest.mark.parametrize(
        "value",
        ["0", "000", "0-0", "---", "-", "-0", "0-", "00-00-00", "-1", " 000 ", "--0--"],
    )
    def test_zeros_and_dashes(self, value: str) -> None:
        assert is_blocked(value)

    @pytest.mark.parametrize(
        "value",
        [
            "10",
            "a0",
            "0a",
            "01",
            "1",
            "-2",
            "0.0",
            "0_0",
            "tester",
            "testing",
            "nullable",
            "guests",
            "nonexistent",
            "user@example.com",
            "+16505551212",
            "object",
            "[object]",
            "abc-123",
        ],
    )
    def test_not_blocked(self, value: str) -> None:
        assert not is_blocked(value)

    def test_extra_per_tenant_values(self) -> None:
        extra = frozenset({"admin", "n/a", "noemail@example.com"})
        assert is_blocked("admin", extra)
        assert is_blocked("  ADMIN ", extra)
        assert is_blocked("N/A", extra)
        assert is_blocked("NoEmail@Example.com", extra)
        # the contract list still applies alongside
        assert is_blocked("null", extra)
        assert is_blocked("000", extra)
        # others are untouched
        assert not is_blocked("administrator", extra)
        assert not is_blocked("alice", extra)

    def test_extra_values_are_per_call(self) -> None:
        assert not is_blocked("admin")
        assert not is_blocked("admin", frozenset())


# --------------------------------------------------------------------------- normalize_identifier


class TestNormalizeIdentifier:
    def test_returns_identifier_tuple(self) -> None:
        ident = normalize_identifier("email", "  User@Example.COM ")
        assert isinstance(ident, Identifier)
        assert ident == ("email", "user@example.com", USER_EMAIL_SHA256)
        assert ident.type == "email"
        assert ident.value == "user@example.com"
        assert ident.hash == USER_EMAIL_SHA256

    def test_email_unicode(self) -> None:
        ident = normalize_identifier("email", "JOSÉ@Example.COM")
        assert ident.value == "josé@example.com"
        assert ident.hash == sha("josé@example.com")

    def test_phone_vector(self) -> None:
        ident = normalize_identifier("phone", "+1 650 555 1212")
        assert ident.value == "+16505551212"
        assert ident.hash == hashlib.sha256(b"16505551212").hexdigest()
        assert ident.hash == PHONE_16505551212_SHA256

    def test_phone_with_default_region(self) -> None:
        ident = normalize_identifier("phone", "(650) 555-1212", default_region="US")
        assert ident.value == "+16505551212"
        assert ident.hash == PHONE_16505551212_SHA256

    def test_phone_national_and_international_hash_equal(self) -> None:
        a = normalize_identifier("phone", "(650) 555-1212", default_region="us")
        b = normalize_identifier("phone", "001 650 555 1212")
        c = normalize_identifier("phone", "+16505551212")
        assert a == b == c

    def test_phone_national_without_region_invalid(self) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_identifier("phone", "(650) 555-1212")

    def test_enum_type_accepted(self) -> None:
        ident = normalize_identifier(IdentifierType.EMAIL, "user@example.com")
        assert ident.hash == USER_EMAIL_SHA256

    @pytest.mark.parametrize("id_type", ["external_id", "device_id", "anonymous_id"])
    def test_other_types_trimmed_case_preserved(self, id_type: str) -> None:
        ident = normalize_identifier(id_type, "  AbC-Def_123  ")
        assert ident.type == id_type
        assert ident.value == "AbC-Def_123"
        assert ident.hash == sha("AbC-Def_123")

    def test_other_types_case_distinguishes(self) -> None:
        a = normalize_identifier("external_id", "ABC")
        b = normalize_identifier("external_id", "abc")
        assert a.hash != b.hash

    def test_other_types_keep_inner_whitespace(self) -> None:
        assert normalize_identifier("device_id", " a b ").value == "a b"

    @pytest.mark.parametrize(
        ("id_type", "raw", "expected"),
        [
            ("external_id", 42, "42"),
            ("device_id", 123456789012345678901234567890, "123456789012345678901234567890"),
            ("anonymous_id", 7, "7"),
        ],
    )
    def test_int_values_read_as_decimal_text(self, id_type: str, raw: int, expected: str) -> None:
        ident = normalize_identifier(id_type, raw)
        assert ident.value == expected
        assert ident.hash == sha(expected)

    def test_int_equals_its_string(self) -> None:
        assert normalize_identifier("external_id", 42) == normalize_identifier("external_id", "42")

    @pytest.mark.parametrize("raw", [0, -1])
    def test_blocked_int_values(self, raw: int) -> None:
        with pytest.raises(BlockedIdentifier):
            normalize_identifier("external_id", raw)

    @pytest.mark.parametrize("raw", [True, False])
    def test_bool_rejected(self, raw: bool) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_identifier("external_id", raw)
        assert exc_info.value.code == "invalid_identifier"

    @pytest.mark.parametrize("raw", [None, ["a"], {"v": "a"}, b"abc", object()])
    def test_non_string_non_int_rejected(self, raw: object) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_identifier("external_id", raw)

    @pytest.mark.parametrize("id_type", ["Email", "EMAIL", "userId", "user_id", "", "ip", "email "])
    def test_unknown_type(self, id_type: str) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_identifier(id_type, "user@example.com")
        assert exc_info.value.code == "unknown_identifier_type"

    def test_unknown_type_checked_before_value(self) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_identifier("nope", True)
        assert exc_info.value.code == "unknown_identifier_type"

    def test_max_length_accepted(self) -> None:
        ident = normalize_identifier("external_id", "x" * 512)
        assert ident.value == "x" * 512

    @pytest.mark.parametrize(
        "id_type", ["external_id", "device_id", "anonymous_id", "email", "phone"]
    )
    def test_overlong_rejected(self, id_type: str) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_identifier(id_type, "x" * 513)
        assert exc_info.value.code == "invalid_identifier"

    def test_overlong_email_rejected(self) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_identifier("email", "a" * 600 + "@example.com")

    def test_overlong_int_rejected(self) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_identifier("external_id", int("9" * 513))

    @pytest.mark.parametrize("id_type", ["external_id", "device_id", "anonymous_id"])
    def test_nul_rejected_for_other_types(self, id_type: str) -> None:
        with pytest.raises(InvalidIdentifier):
            normalize_identifier(id_type, "ab\x00c")

    @pytest.mark.parametrize(
        "raw",
        ["  NULL ", "Undefined", "[object Object]", "000", "0-0", "---", "-1", "", "   ", "test"],
    )
    @pytest.mark.parametrize(
        "id_type", ["external_id", "email", "phone", "device_id", "anonymous_id"]
    )
    def test_blocked_values_every_type(self, id_type: str, raw: str) -> None:
        # Blocked wins over type validation: a blocked value is dropped, never "invalid".
        with pytest.raises(BlockedIdentifier) as exc_info:
            normalize_identifier(id_type, raw, default_region="US")
        assert exc_info.value.code == "blocked_identifier"

    @pytest.mark.parametrize("raw", ["10", "a0", "tester"])
    def test_not_blocked_values(self, raw: str) -> None:
        assert normalize_identifier("external_id", raw).value == raw

    def test_extra_blocked_values(self) -> None:
        extra = frozenset({"admin", "nobody@example.com"})
        with pytest.raises(BlockedIdentifier):
            normalize_identifier("external_id", " Admin ", extra_blocked=extra)
        with pytest.raises(BlockedIdentifier):
            normalize_identifier("email", "NoBody@Example.com", extra_blocked=extra)
        assert normalize_identifier("external_id", "admin").value == "admin"
        assert normalize_identifier("external_id", "admin2", extra_blocked=extra).value == "admin2"

    def test_invalid_email_via_identifier(self) -> None:
        with pytest.raises(InvalidIdentifier) as exc_info:
            normalize_identifier("email", "not-an-email")
        assert exc_info.value.code == "invalid_identifier"


# --------------------------------------------------------------------------- types and priority


class TestTypesAndPriority:
    def test_type_values(self) -> None:
        assert {t.value for t in IdentifierType} == {
            "external_id",
            "email",
            "phone",
            "device_id",
            "anonymous_id",
        }

    def test_priority_covers_all_types(self) -> None:
        assert set(PRIORITY) == set(IdentifierType)

    def test_priority_order(self) -> None:
        # external_id > email > phone > device_id > anonymous_id (lower number = stronger)
        ordered = sorted(PRIORITY, key=PRIORITY.__getitem__)
        assert ordered == ["external_id", "email", "phone", "device_id", "anonymous_id"]
        assert len(set(PRIORITY.values())) == len(PRIORITY)

    def test_priority_lookup_by_plain_string(self) -> None:
        assert PRIORITY["external_id"] < PRIORITY["email"] < PRIORITY["phone"]
        assert PRIORITY["phone"] < PRIORITY["device_id"] < PRIORITY["anonymous_id"]

    def test_enum_is_str(self) -> None:
        assert IdentifierType.EMAIL == "email"
        assert str(IdentifierType.PHONE) == "phone"


def test_e164_form_normalizes_to_itself_in_every_region():
    """core.resting_identifiers relies on it: a phone number normalized once, read again with
    any default region, is the same E.164 number (so its hash is the one already computed)."""
    import phonenumbers

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            e164 = normalize_phone(national, region)
            for default_region in (region, None, "US"):
                assert normalize_phone(e164, default_region) == e164, (region, kind, national)
            checked += 1
    assert checked > 400
