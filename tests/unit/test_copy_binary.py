"""Binary COPY fields (workers/copy_binary.py) hold the values Postgres reads from text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from workers.copy_binary import jsonb_field, timestamp_bytes, uuid_bytes, uuid_field


@pytest.mark.parametrize("text", [
    "12345678-1234-1234-1234-123456789abc", "12345678-1234-1234-1234-123456789ABC",
    "12345678123412341234123456789abc", "{12345678-1234-1234-1234-123456789abc}",
])
def test_uuid_bytes_reads_every_form_postgres_reads(text):
    assert uuid_bytes(text) == uuid.UUID("12345678-1234-1234-1234-123456789abc").bytes


@pytest.mark.parametrize("text", ["", "not-a-uuid", "12345678-1234", "12345678-1234-1234-1234-123456789abcde"])
def test_uuid_bytes_refuses_what_is_no_uuid(text):
    with pytest.raises(ValueError):
        uuid_bytes(text)


def test_a_missing_uuid_is_null():
    assert uuid_field(None) == b"\xff\xff\xff\xff"
    assert uuid_field(str(uuid.UUID(int=1))) == b"\x00\x00\x00\x10" + uuid.UUID(int=1).bytes


def _micros(value: datetime) -> int:
    """Microseconds since 2000-01-01 UTC, by arithmetic (a naive time read as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_timestamps_count_from_the_servers_epoch_in_utc():
    def count(value: datetime) -> int:
        return int.from_bytes(timestamp_bytes(value), "big", signed=True)

    assert count(datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert count(datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    assert count(datetime(2000, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))) == 0  # an offset is honoured
    assert count(datetime(2000, 1, 1, 0, 0, 1)) == 1_000_000  # naive: read as UTC


def test_jsonb_is_a_version_byte_then_the_json_with_their_length():
    text = '{"k":"ünï"}'.encode()
    assert len(text) == 13
    assert jsonb_field({"k": "ünï"}) == b"\x00\x00\x00\x0e" + b"\x01" + text


@pytest.mark.parametrize("value", [
    datetime(2000, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 12, 1, 18, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 12, 1, 18, 0, 0, 123_456),
])
def test_timestamp_bytes_are_the_microseconds_big_endian(value):
    assert bytes(timestamp_bytes(value)) == _micros(value).to_bytes(8, "big", signed=True)
