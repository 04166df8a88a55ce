"""Address rules per chain: what is valid, and the one canonical spelling every stage compares.

An address is checked and normalised once, when a record is parsed, so every detector and the
sanctions screen see one identity per wallet:

- ``eip155:*`` (EVM): ``0x`` + 40 hex digits. A mixed-case address must carry a valid EIP-55
  checksum (a typo in a checksummed address is refused, not silently accepted); the canonical
  form is lower case.
- ``tron:*``: base58check of ``0x41`` + 20 bytes (``T...``, 34 characters), checksum verified;
  case-sensitive.
- ``solana:*``: base58 of a 32-byte public key; case-sensitive.
- ``bip122:*`` (Bitcoin): base58check P2PKH/P2SH, or bech32/bech32m (BIP-173/350) with its
  checksum; bech32 is case-insensitive but never mixed case, canonical lower case.
- any other CAIP-2 namespace: printable ASCII without spaces, at most 128 characters, kept as
  written.

Chain ids are CAIP-2 strings (``namespace:reference``).
"""

from __future__ import annotations

import hashlib
import re

from Crypto.Hash import keccak

CAIP2_RE = re.compile(r"^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$")
MAX_ADDRESS_CHARS = 128

_EVM_RE = re.compile(r"^0[xX]([0-9a-fA-F]{40})$")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST, _BECH32M_CONST = 1, 0x2BC830A3
_GENERIC_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class AddressError(ValueError):
    """An address that does not follow its chain's rule."""


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def evm_checksum(hex40: str) -> str:
    """The EIP-55 spelling of 40 hex digits (without ``0x``)."""
    low = hex40.lower()
    digest = keccak256(low.encode("ascii")).hex()
    return "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(low, digest[:40], strict=True)
    )


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise AddressError(f"{c!r} is not a base58 character")
        n = n * 58 + i
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * (len(text) - len(text.lstrip("1"))) + body


def b58check_payload(text: str) -> bytes:
    """The payload of a base58check string; raises on a bad checksum."""
    raw = b58decode(text)
    if len(raw) < 5:
        raise AddressError("too short for base58check")
    payload, check = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise AddressError("base58check checksum does not match")
    return payload


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32_valid(text: str) -> bool:
    """True for a well-formed bech32 or bech32m string (checksum included), in one case."""
    if text != text.lower() and text != text.upper():
        return False
    low = text.lower()
    pos = low.rfind("1")
    if pos < 1 or pos + 7 > len(low) or len(low) > 90:
        return False
    hrp, data = low[:pos], low[pos + 1 :]
    if any(c not in _BECH32_CHARSET for c in data):
        return False
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    values += [_BECH32_CHARSET.index(c) for c in data]
    return _bech32_polymod(values) in (_BECH32_CONST, _BECH32M_CONST)


def _evm(address: str) -> str:
    m = _EVM_RE.match(address)
    if not m:
        raise AddressError("an EVM address is 0x followed by 40 hex digits")
    digits = m.group(1)
    if digits != digits.lower() and digits != digits.upper() and evm_checksum(digits) != digits:
        raise AddressError("mixed-case EVM address with an invalid EIP-55 checksum")
    return "0x" + digits.lower()


def _tron(address: str) -> str:
    if len(address) != 34 or not address.startswith("T"):
        raise AddressError("a Tron address is 34 base58 characters starting with T")
    payload = b58check_payload(address)
    if len(payload) != 21 or payload[0] != 0x41:
        raise AddressError("a Tron address encodes 0x41 and 20 bytes")
    return address


def _solana(address: str) -> str:
    if not 32 <= len(address) <= 44 or len(b58decode(address)) != 32:
        raise AddressError("a Solana address is the base58 of 32 bytes")
    return address


def _bitcoin(address: str) -> str:
    if address[:3].lower() in ("bc1", "tb1") or address[:5].lower() == "bcrt1":
        if not bech32_valid(address):
            raise AddressError("invalid bech32 address (checksum, characters or mixed case)")
        return address.lower()
    if not 25 <= len(address) <= 35:
        raise AddressError("a base58 Bitcoin address has 25 to 35 characters")
    payload = b58check_payload(address)
    if len(payload) != 21 or payload[0] not in (0x00, 0x05, 0x6F, 0xC4):
        raise AddressError("not a P2PKH or P2SH Bitcoin address")
    return address


def _generic(address: str) -> str:
    if not _GENERIC_RE.match(address):
        raise AddressError(
            f"an address is 1 to {MAX_ADDRESS_CHARS} printable ASCII characters without spaces"
        )
    return address


_RULES = {"eip155": _evm, "tron": _tron, "solana": _solana, "bip122": _bitcoin}


def check_chain_id(chain_id: str) -> str:
    if not CAIP2_RE.match(chain_id):
        raise AddressError(f"{chain_id[:40]!r} is not a CAIP-2 chain id (namespace:reference)")
    return chain_id


def canonical_address(chain_id: str, address: str) -> str:
    """The canonical spelling of ``address`` on ``chain_id``; raises AddressError if invalid."""
    if len(address) > MAX_ADDRESS_CHARS:
        raise AddressError(f"address longer than {MAX_ADDRESS_CHARS} characters")
    return _RULES.get(chain_id.split(":", 1)[0], _generic)(address)


def canonical_wallet(address: str) -> str:
    """The canonical spelling of an address whose chain is not given (a KYC profile's wallets),
    by its format: EVM hex and valid bech32 are case-folded; anything else (Tron, Solana, base58
    Bitcoin) is case-sensitive and checked by the generic rule."""
    if len(address) > MAX_ADDRESS_CHARS:
        raise AddressError(f"address longer than {MAX_ADDRESS_CHARS} characters")
    if _EVM_RE.match(address):
        return _evm(address)
    if bech32_valid(address):  # a base58 address (Solana) may also start with bc1
        return address.lower()
    return _generic(address)
