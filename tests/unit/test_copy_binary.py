"""Binary COPY fields (workers/copy_binary.py) hold the values Postgres reads from text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from workers.copy_binary import micros, text_field, timestamp_bytes, uuid_bytes, uuid_field


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


def test_micros_count_from_the_servers_epoch_in_utc():
    assert micros(datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert micros(datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    assert micros(datetime(2026, 12, 1, 18, 0, 0, 123_456, tzinfo=UTC)) == (
        (datetime(2026, 12, 1, 18, tzinfo=UTC) - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        + 123_456)
    plus_two = timezone(timedelta(hours=2))
    assert micros(datetime(2000, 1, 1, 2, tzinfo=plus_two)) == 0  # an offset is honoured
    assert micros(datetime(2000, 1, 1, 0, 0, 1)) == 1_000_000  # naive: read as UTC


def test_text_is_its_utf8_bytes_with_their_length():
    assert text_field("ünï\t") == b"\x00\x00\x00\x06" + "ünï\t".encode()


@pytest.mark.parametrize("value", [
    datetime(2000, 1, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 12, 1, 18, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 12, 1, 18, 0, 0, 123_456),
])
def test_timestamp_bytes_are_the_micros_big_endian(value):
    assert bytes(timestamp_bytes(value)) == micros(value).to_bytes(8, "big", signed=True)
