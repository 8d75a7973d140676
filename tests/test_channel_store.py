"""The channels' store on SQLite: keys encrypted at rest and readable only with the same
secret key; every change moves ``version()``; names are checked and unique."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tokenrelay.store import Store
from tokenrelay.store.channels import ChannelExists, ChannelNotFound, ChannelSpec, ChannelStore
from tokenrelay.store.schema import channel_keys
from tokenrelay.store.secrets import NoSecretKey, SecretBox


async def test_channels_keys_and_versions(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path}/c.db")
    try:
        channels = ChannelStore(store.engine, SecretBox("one"))
        v0 = await channels.version()
        made = await channels.create(
            ChannelSpec(name="a", base_url="http://x/v1"), ["upstream-secret-0001"]
        )
        assert [k.last4 for k in made.keys] == ["0001"] and made.keys[0].secret is None
        async with store.engine.connect() as conn:
            sealed = (await conn.execute(select(channel_keys.c.secret))).scalar_one()
        assert "upstream-secret" not in sealed
        [loaded] = await channels.all(with_secrets=True)
        assert loaded.keys[0].secret == "upstream-secret-0001"
        v1 = await channels.version()
        await channels.add_key("a", "upstream-secret-0002")
        v2 = await channels.version()
        await channels.update("a", {"enabled": False})
        v3 = await channels.version()
        assert len({v0, v1, v2, v3}) == 4
        with pytest.raises(NoSecretKey, match="not the one"):
            await ChannelStore(store.engine, SecretBox("two")).all(with_secrets=True)
        with pytest.raises(NoSecretKey, match="TOKENRELAY_SECRET_KEY"):
            await ChannelStore(store.engine, SecretBox(None)).add_key("a", "k-0003")
        with pytest.raises(ChannelExists):
            await channels.create(ChannelSpec(name="a", base_url="http://y/v1"), [])
        with pytest.raises(ValueError, match="protocol"):
            await channels.create(ChannelSpec(name="b", base_url="http://y", protocol="x"), [])
        with pytest.raises(ValueError, match="base_url"):
            await channels.update("a", {"base_url": "ftp://nope"})
        await channels.delete("a")
        assert await channels.all() == [] and await channels.version() != v3
        with pytest.raises(ChannelNotFound):
            await channels.get("a")
    finally:
        await store.close()
