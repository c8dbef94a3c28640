"""DKIM test keys made on the spot: RSA by openssl, Ed25519 by PyNaCl, in
the forms dkimpy signs with and DNS publishes."""

import base64
import subprocess

import nacl.signing


def rsa_key() -> tuple[bytes, str]:
    """(private key PEM for dkimpy, p= value for DNS)."""
    pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True, check=True).stdout
    return pem, base64.b64encode(der).decode()


def ed25519_key() -> tuple[bytes, str]:
    """(base64 seed for dkimpy, p= value for DNS)."""
    sk = nacl.signing.SigningKey.generate()
    return base64.b64encode(bytes(sk)), base64.b64encode(bytes(sk.verify_key)).decode()


def txt(value: str) -> str:
    """A zone-file TXT rdata, split into 255-octet strings."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
