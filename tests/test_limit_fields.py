"""A key's limit fields are listed once (``limits/fields.py``): the store's columns, the
admin API's schemas, the key checks and the CLI's flags all follow that list."""

from __future__ import annotations

import argparse
import dataclasses

import msgspec
import pytest

from tokenrelay.keys_cli import add_subcommands
from tokenrelay.limits import Limits
from tokenrelay.limits.fields import LIMIT_FIELDS, LIMIT_NAMES
from tokenrelay.server.admin_schema import CreateKey, Key, openapi_document
from tokenrelay.store import KeySpec
from tokenrelay.store.schema import api_keys


def test_the_store_columns_follow_the_list() -> None:
    columns = [c.name for c in api_keys.columns]
    start = columns.index(LIMIT_NAMES[0])
    assert columns[start : start + len(LIMIT_NAMES)] == list(LIMIT_NAMES)
    for field in LIMIT_FIELDS:
        column = api_keys.c[field.name]
        assert column.nullable
        assert column.type.python_type is field.kind


def test_the_admin_api_schemas_follow_the_list() -> None:
    assert set(LIMIT_NAMES) <= set(CreateKey.__struct_fields__)
    assert set(LIMIT_NAMES) <= set(Key.__struct_fields__)
    schemas = openapi_document()["components"]["schemas"]
    for field in LIMIT_FIELDS:
        given = schemas["CreateKey"]["properties"][field.name]["anyOf"][0]
        assert given["type"] == ("integer" if field.whole else "number")
        assert field.name in schemas["Key"]["required"]
        with pytest.raises(msgspec.ValidationError, match=field.name):
            msgspec.convert({"name": "k", field.name: -1}, CreateKey)


def test_key_checks_and_the_limiter_follow_the_list() -> None:
    assert set(LIMIT_NAMES) <= {f.name for f in dataclasses.fields(Limits)}
    for field in LIMIT_FIELDS:
        with pytest.raises(ValueError, match=f"^{field.name}: "):
            KeySpec(name="k", **{field.name: -1})
        assert getattr(KeySpec(name="k", **{field.name: 1}), field.name) == 1


def test_the_cli_flags_follow_the_list() -> None:
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    flags = [a for field in LIMIT_FIELDS for a in (field.flag, "2")]
    args = parser.parse_args(["keys", "create", "--name", "k", *flags])
    assert all(getattr(args, name) == 2 for name in LIMIT_NAMES)
