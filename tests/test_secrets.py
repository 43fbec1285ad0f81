"""The encryption service (`secrets.encrypt`): AES-256-GCM under the host's master key,
tokens bound to the plugin that made them, and plaintext that never reaches a log or the
audit."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from conftest import write_policy
from tether import CapabilityViolationError, Host, Plugin, SecretError
from tether.services.secrets import (
    NONCE_BYTES,
    SecretBox,
    master_key_loader,
    read_key_file,
)

KEY = base64.b64encode(bytes(range(32))).decode()
PLAINTEXT = "sk-live-4f1c9a7e-very-secret-value"


def box_with(key: bytes) -> SecretBox:
    return SecretBox(lambda: key)


# The service -------------------------------------------------------------------------


def test_round_trip_and_token_shape() -> None:
    box = box_with(os.urandom(32))
    token = box.encrypt("weather", PLAINTEXT)
    assert token.startswith("v1.")
    raw = base64.urlsafe_b64decode(token[3:])
    assert len(raw) == NONCE_BYTES + len(PLAINTEXT.encode()) + 16  # nonce, ciphertext, tag
    assert PLAINTEXT not in token
    assert box.decrypt("weather", token) == PLAINTEXT
    # A fresh random nonce every time: the same plaintext never gives the same token.
    tokens = {box.encrypt("weather", PLAINTEXT) for _ in range(50)}
    assert len(tokens) == 50
    assert len({base64.urlsafe_b64decode(t[3:])[:NONCE_BYTES] for t in tokens}) == 50
    assert box.decrypt("weather", box.encrypt("weather", "")) == ""
    assert box.decrypt("weather", box.encrypt("weather", "ünïcødé ✓")) == "ünïcødé ✓"


def test_tampered_foreign_and_malformed_tokens_are_refused() -> None:
    box = box_with(os.urandom(32))
    token = box.encrypt("weather", PLAINTEXT)
    raw = bytearray(base64.urlsafe_b64decode(token[3:]))
    for i in (0, NONCE_BYTES, len(raw) - 1):  # nonce, ciphertext, tag
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        with pytest.raises(SecretError, match="does not verify"):
            box.decrypt("weather", "v1." + base64.urlsafe_b64encode(bytes(flipped)).decode())
    with pytest.raises(SecretError, match="another plugin"):
        box.decrypt("notes", token)  # bound to the plugin id by the associated data
    with pytest.raises(SecretError, match="another master key"):
        box_with(os.urandom(32)).decrypt("weather", token)
    with pytest.raises(SecretError, match="not a Tether secret token"):
        box.decrypt("weather", "v2." + token[3:])
    with pytest.raises(SecretError, match="malformed or truncated"):
        box.decrypt("weather", token[:10])
    with pytest.raises(SecretError, match="malformed or truncated"):
        box.decrypt("weather", "v1.!!!not base64!!!")


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = read_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    path.write_text(KEY)
    path.chmod(mode)
    with pytest.raises(SecretError, match=r"readable by other users .*chmod 600"):
        read_key_file(path)


@pytest.mark.parametrize("text", ["", "not base64 at all", base64.b64encode(b"short").decode()])
def test_a_bad_key_is_refused_with_how_to_make_one(tmp_path: Path, text: str) -> None:
    path = tmp_path / "master.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(SecretError, match=r"exactly 32 random bytes.*os.urandom"):
        read_key_file(path)
    with pytest.raises(SecretError, match=r"\$TETHER_MASTER_KEY"):
        master_key_loader(text or "x", path)()


def test_environment_key_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    from_env = master_key_loader(KEY, path)()
    assert from_env == bytes(range(32))
    assert not path.exists()  # the file was never needed


def test_a_load_failure_is_remembered() -> None:
    calls = []

    def load() -> bytes:
        calls.append(1)
        raise SecretError("no key here")

    box = SecretBox(load)
    for _ in range(3):
        with pytest.raises(SecretError, match="encryption is unavailable: no key here"):
            box.encrypt("weather", "x")
    assert calls == [1]


# Through the host --------------------------------------------------------------------


def vault_plugin(pid: str = "vault") -> Plugin:
    return Plugin(id=pid, name=pid.title(), capabilities=["secrets.encrypt", "storage.write"])


async def test_plugins_encrypt_and_cannot_read_each_others_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_MASTER_KEY", raising=False)
    write_policy(tmp_path, '[host]\nentry_points = false\nmaster_key_file = "keys/vault.key"\n')
    a, b = vault_plugin("alpha"), vault_plugin("beta")
    async with Host(tmp_path / "tether.toml", plugins=[a, b]) as host:
        key_file = tmp_path / "keys" / "vault.key"
        assert key_file.is_file()  # created at start because it is configured
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        token = a.context.secrets.encrypt(PLAINTEXT)
        assert a.context.secrets.decrypt(token) == PLAINTEXT
        with pytest.raises(SecretError, match=r"'beta'.*made by another plugin"):
            b.context.secrets.decrypt(token)
        (record,) = host.audit.read(plugin="beta", kind="secret_rejected")
        assert token not in record.message
        assert host.secrets.decrypt("alpha", token) == PLAINTEXT  # the host-level service
    # Tokens survive a restart with the same key file.
    async with Host(tmp_path / "tether.toml", plugins=[vault_plugin("alpha")]) as host:
        assert host.secrets.decrypt("alpha", token) == PLAINTEXT


async def test_world_readable_key_file_disables_encryption_not_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_MASTER_KEY", raising=False)
    (tmp_path / "master.key").write_text(KEY)
    (tmp_path / "master.key").chmod(0o644)
    write_policy(tmp_path, '[host]\nentry_points = false\nmaster_key_file = "master.key"\n')
    p = vault_plugin()
    async with Host(tmp_path / "tether.toml", plugins=[p]) as host:
        assert host.active_ids() == ["vault"]
        (record,) = host.audit.read(plugin="host", kind="secrets_unavailable")
        assert "chmod 600" in record.message
        with pytest.raises(SecretError, match=r"'vault': encryption is unavailable.*chmod 600"):
            p.context.secrets.encrypt("x")


async def test_env_master_key_and_default_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_policy(tmp_path, "[host]\nentry_points = false\n")
    monkeypatch.setenv("TETHER_MASTER_KEY", KEY)
    p = vault_plugin()
    async with Host(tmp_path / "tether.toml", plugins=[p]):
        token = p.context.secrets.encrypt(PLAINTEXT)
    assert not (tmp_path / ".tether" / "master.key").exists()
    assert box_with(bytes(range(32))).decrypt("vault", token) == PLAINTEXT
    # Without either, the key lives in <data_dir>/master.key, created on first use.
    monkeypatch.delenv("TETHER_MASTER_KEY")
    p = vault_plugin()
    async with Host(tmp_path / "tether.toml", plugins=[p]):
        assert not (tmp_path / ".tether" / "master.key").exists()
        assert p.context.secrets.decrypt(p.context.secrets.encrypt("hi")) == "hi"
    assert stat.S_IMODE((tmp_path / ".tether" / "master.key").stat().st_mode) == 0o600


async def test_plaintext_never_reaches_logs_audit_or_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TETHER_MASTER_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    write_policy(tmp_path, "[host]\nentry_points = false\n")
    owner = vault_plugin()
    # A plugin without the grant trying to encrypt: a violation that is logged and audited.
    stranger = Plugin(id="stranger", name="Stranger", capabilities=["storage.write"])
    async with Host(tmp_path / "tether.toml", plugins=[owner, stranger]) as host:
        ctx = owner.context
        token = ctx.secrets.encrypt(PLAINTEXT)
        await ctx.storage.set("api_key", token)  # what a plugin keeps is the token
        ctx.log.info("stored the api key as %s", token)
        with pytest.raises(CapabilityViolationError, match=r"secrets.encrypt"):
            stranger.context.secrets.encrypt(PLAINTEXT)
        with pytest.raises(CapabilityViolationError):
            stranger.context.secrets.decrypt(token)
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        with pytest.raises(SecretError) as caught:
            ctx.secrets.decrypt(tampered)
        assert PLAINTEXT not in str(caught.value) and token not in str(caught.value)
        assert ctx.secrets.decrypt(token) == PLAINTEXT
        assert len(host.audit.read(plugin="stranger", kind="capability_violation")) == 2
        assert len(host.audit.read(plugin="vault", kind="secret_rejected")) == 1
        audit_text = repr([r.to_json() for r in host.audit.read(limit=1000)])
    messages = [r.getMessage() for r in caplog.records]
    # Logging did happen around the calls: the encryption, the plugin's own line, the refusal.
    assert any("vault encrypted a secret" in m for m in messages)
    assert any("stored the api key as v1." in m for m in messages)
    assert any("vault: a secret token failed" in m for m in messages)
    for record in caplog.records:
        assert PLAINTEXT not in record.getMessage()
    assert PLAINTEXT not in caplog.text
    assert PLAINTEXT not in audit_text and token not in audit_text
    data = b"".join(p.read_bytes() for p in (tmp_path / ".tether").rglob("*") if p.is_file())
    assert PLAINTEXT.encode() not in data
    assert token.encode() in data  # the stored token is there, as ciphertext
