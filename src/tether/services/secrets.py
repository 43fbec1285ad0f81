"""The encryption service behind `secrets.encrypt`: AES-256-GCM under the host's master key.

Tokens are `v1.` + URL-safe base64 of a random 96-bit nonce followed by the ciphertext and
its 128-bit tag. The associated data binds each token to the plugin id that made it, so one
plugin cannot decrypt (or swap in) another plugin's tokens even though they share the key.

The master key is 32 random bytes, base64-encoded, from `$TETHER_MASTER_KEY` or a key file
(created with mode 0600 on first use when missing; refused when others can read it).
Nothing here logs or audits a plaintext, a key, or a token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets as _random
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.contract.errors import TetherError

log = logging.getLogger("tether.secrets")

MASTER_KEY_ENV = "TETHER_MASTER_KEY"
TOKEN_PREFIX = "v1."
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_PLAINTEXT_BYTES = 1_048_576
_AAD_PREFIX = b"tether.secret.v1\x00"


class SecretError(TetherError):
    """Encryption is unavailable (bad master key) or a token could not be decrypted."""


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretError(
            f"{where} must hold the base64 of exactly 32 random bytes; generate one with "
            '`python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`'
        )
    return key


def read_key_file(path: Path, *, create: bool = True) -> bytes:
    """Read (or, when missing and `create`, make) a master key file; refuse loose modes."""
    if not path.exists():
        if not create:
            raise SecretError(f"master key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = base64.b64encode(_random.token_bytes(32)).decode() + "\n"
        try:
            # O_EXCL: two hosts starting at once must not both write (and disagree on) a key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            log.info("created a new master key file at %s (mode 0600); back it up", path)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise SecretError(f"master key file {path} is not a regular file")
    if mode & 0o077:
        raise SecretError(
            f"master key file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"refusing to use it. Run `chmod 600 {path}`"
        )
    return _decode_key(path.read_text(), f"master key file {path}")


def master_key_loader(env_value: str | None, key_file: Path) -> Callable[[], bytes]:
    """A loader for the master key: the environment value when set, else the key file."""

    def load() -> bytes:
        if env_value:
            return _decode_key(env_value, f"${MASTER_KEY_ENV}")
        return read_key_file(key_file)

    return load


class SecretBox:
    """Encrypts and decrypts text for an owner id (a plugin id) under one master key.

    The key is loaded on first use (or by `load()` at start-up); a loading failure is
    remembered and raised, with the same message, by every later call.
    """

    def __init__(self, load_key: Callable[[], bytes]) -> None:
        self._load_key = load_key
        self._aead: AESGCM | None = None
        self._problem: str | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the master key now; raises `SecretError` when it is unusable."""
        self._cipher()

    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is not None:
                return self._aead
            if self._problem is not None:
                raise SecretError(self._problem)
            try:
                self._aead = AESGCM(self._load_key())
            except SecretError as exc:
                self._problem = f"encryption is unavailable: {exc}"
                raise SecretError(self._problem) from None
            except OSError as exc:
                self._problem = f"encryption is unavailable: cannot read the master key: {exc}"
                raise SecretError(self._problem) from None
            return self._aead

    @staticmethod
    def _aad(owner: str) -> bytes:
        return _AAD_PREFIX + owner.encode()

    def encrypt(self, owner: str, plaintext: str) -> str:
        """Encrypt `plaintext` for `owner`; a fresh random nonce every call."""
        if not isinstance(plaintext, str):
            raise TypeError(f"encrypt takes text (str), not {type(plaintext).__name__}")
        data = plaintext.encode()
        if len(data) > MAX_PLAINTEXT_BYTES:
            raise SecretError(
                f"plaintext is {len(data)} bytes; the limit is {MAX_PLAINTEXT_BYTES} bytes"
            )
        nonce = _random.token_bytes(NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, data, self._aad(owner))
        return TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, owner: str, token: str) -> str:
        """Decrypt a token made by `encrypt` for the same owner; raises `SecretError`
        for a tampered, truncated, foreign or malformed token."""
        aead = self._cipher()
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise SecretError(
                f"not a Tether secret token (expected text starting with {TOKEN_PREFIX!r})"
            )
        try:
            raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :].encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SecretError("the secret token is malformed or truncated")
        try:
            data = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(owner))
        except InvalidTag:
            raise SecretError(
                "the secret token does not verify: it was altered, made under another master "
                "key, or made by another plugin"
            ) from None
        return data.decode()
