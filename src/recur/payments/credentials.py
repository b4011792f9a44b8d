"""Payment gateways' credentials: checked field by field, kept only encrypted.

Credentials are checked by their gateway adapter's own settings model, then kept only as a Fernet
token made with the settings' `gateway_credentials_key`. Several keys may be configured
(MultiFernet): the first encrypts, every one decrypts, so a new key is put first, and the old
one dropped once `gateway_config.rotate_credentials` has encrypted everything again. The token
also carries the tenant and the gateway's name, checked when it is read, so a token copied to
another row decrypts to nothing usable. No error message repeats a value given.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from recur.kit.errors import Conflict, InvalidRequest
from recur.payments.gateways import check_credentials as check_gateway_credentials
from recur.payments.gateways.base import GatewayConfigError

if TYPE_CHECKING:
    from recur.settings import Settings

# Fields that hold a secret. Whatever the gateway's own model allows, a secret is visible ASCII:
# no gateway issues keys with spaces, and a stray newline pasted with a key is better refused now
# than at the first charge.
_SECRETS = ("api_key", "webhook_secret", "hmac_key", "webhook_password")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def credentials_cipher(settings: Settings) -> MultiFernet | None:
    """The cipher of the settings' credentials keys, or None when none is configured."""
    if settings.gateway_credentials_key is None:
        return None
    keys = settings.gateway_credentials_key.get_secret_value().split(",")
    return MultiFernet([Fernet(key.strip()) for key in keys])


def check_credentials(name: str, credentials: dict[str, Any]) -> dict[str, Any]:
    """The credentials, as the gateway `name` needs them; InvalidRequest naming the field.

    The adapter's own settings model (`gateways.check_credentials`) is the one judge of the
    fields, so that what is stored is exactly what the adapter will accept. No message repeats
    a value given.
    """
    try:
        check_gateway_credentials(name, credentials)
    except GatewayConfigError as exc:
        param = f"credentials.{exc.param}" if exc.param else "credentials"
        if exc.code == "unknown_gateway":
            raise InvalidRequest(exc.message, param="name") from None
        raise InvalidRequest(_message(exc.message, exc.param, param), param=param) from None
    for field_name in _SECRETS:
        value = credentials.get(field_name)
        if isinstance(value, str) and not _VISIBLE_ASCII.fullmatch(value):
            param = f"credentials.{field_name}"
            raise InvalidRequest(f"{param}: must be visible ASCII, no spaces", param=param)
    return dict(credentials)


def _message(message: str, field_name: str | None, param: str) -> str:
    """The adapter's message with the field named as the API names it."""
    if field_name and "Extra inputs are not permitted" in message:
        return f"{param}: the gateway takes no such credential"
    return f"{param}: {message.partition(': ')[2] or message}"


def summarize(name: str, credentials: dict[str, Any]) -> dict[str, str]:
    """What may be shown of the credentials: never more than a key's last 4 characters."""
    summary = {}
    if "api_key" in credentials:
        summary["api_key_last4"] = credentials["api_key"][-4:]
    if name == "adyen":
        summary["merchant_account"] = credentials["merchant_account"]
    return summary


def _envelope(tenant_id: str, name: str, credentials: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"tenant_id": tenant_id, "gateway": name, "credentials": credentials},
        option=orjson.OPT_SORT_KEYS,
    )


def encrypt_credentials(
    cipher: MultiFernet | None, tenant_id: str, name: str, credentials: dict[str, Any]
) -> str | None:
    """The token to store: None for a gateway that needs no credentials. Conflict when some
    are needed and no key is configured: they are never stored in clear."""
    if not credentials:
        return None
    if cipher is None:
        raise Conflict(
            f"the {name} gateway's credentials cannot be stored: the server has no "
            "RECUR_GATEWAY_CREDENTIALS_KEY to encrypt them with",
            code="credentials_key_missing",
            param="credentials",
        )
    return cipher.encrypt(_envelope(tenant_id, name, credentials)).decode()


def decrypt_credentials(
    cipher: MultiFernet | None, tenant_id: str, name: str, token: str | None
) -> dict[str, Any] | None:
    """The clear credentials of a stored token ({} for none), or None when no configured key
    opens it or it was made for another tenant or gateway."""
    if token is None:
        return {}
    if cipher is None:
        return None
    try:
        envelope = orjson.loads(cipher.decrypt(token.encode()))
    except InvalidToken:
        return None
    if envelope.get("tenant_id") != tenant_id or envelope.get("gateway") != name:
        return None
    return dict(envelope["credentials"])
