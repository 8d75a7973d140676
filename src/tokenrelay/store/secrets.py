"""Upstream keys encrypted at rest: Fernet (AES-128-CBC with HMAC-SHA256, from
``cryptography``) under a key derived from ``$TOKENRELAY_SECRET_KEY``.

Any string will do as the secret (its SHA-256 is the Fernet key); losing or changing it
makes the stored keys unreadable (they have to be entered again). Without it, channels
can be stored but not their upstream keys: ``SecretBox.seal`` refuses, saying so.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.fernet import Fernet, InvalidToken

ENV = "TOKENRELAY_SECRET_KEY"


class NoSecretKey(ValueError):
    """Upstream keys cannot be stored or read: no (or the wrong) secret key."""


class SecretBox:
    def __init__(self, secret: str | None) -> None:
        self._fernet: Fernet | None = None
        if secret:
            digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_env(cls) -> SecretBox:
        return cls(os.environ.get(ENV) or None)

    @property
    def ready(self) -> bool:
        return self._fernet is not None

    def seal(self, plain: str) -> str:
        if self._fernet is None:
            raise NoSecretKey(
                f"api_keys: upstream keys are stored encrypted; set {ENV} to store them"
            )
        return self._fernet.encrypt(plain.encode("utf-8", "surrogatepass")).decode("ascii")

    def open(self, sealed: str) -> str:
        if self._fernet is None:
            raise NoSecretKey(f"{ENV} is not set: the stored upstream keys cannot be read")
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8", "surrogatepass")
        except InvalidToken:
            raise NoSecretKey(f"{ENV} is not the one the upstream keys were stored with") from None
