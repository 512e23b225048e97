"""Makes JWTs and JWKS documents for the tests with the standard library and the openssl CLI."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_int(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def encode(header, claims):
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())


def hs256(claims, secret, header=None):
    h = {"alg": "HS256", "typ": "JWT"}
    h.update(header or {})
    signing_input = encode(h, claims)
    sig = hmac.new(secret if isinstance(secret, bytes) else secret.encode(), signing_input.encode(),
                   hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


class RsaKey:
    """An RSA key pair made with openssl, its JWK, and RS256 signing."""

    def __init__(self, tmpdir, kid):
        self.kid = kid
        self.private = os.path.join(tmpdir, f"{kid}.pem")
        self.public = os.path.join(tmpdir, f"{kid}.pub.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", self.private], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", self.private, "-pubout", "-out", self.public],
                       check=True, capture_output=True)
        text = subprocess.run(["openssl", "pkey", "-in", self.private, "-text_pub",
                               "-noout"], check=True, capture_output=True, text=True).stdout
        self.n, self.e = self._parse_modulus(text)

    @staticmethod
    def _parse_modulus(text):
        lines = text.splitlines()
        hexdigits, e, grab = [], None, False
        for line in lines:
            s = line.strip()
            if s.startswith("Modulus:"):
                grab = True
                continue
            if s.startswith("Exponent:"):
                e = int(s.split()[1])
                grab = False
                continue
            if grab:
                hexdigits.append(s.replace(":", ""))
        return int("".join(hexdigits), 16), e

    def jwk(self):
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": b64url_int(self.n), "e": b64url_int(self.e)}

    def sign(self, claims, header=None):
        h = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        h.update(header or {})
        signing_input = encode(h, claims)
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.private],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return signing_input + "." + b64url(sig)

    def public_pem(self):
        return open(self.public, "rb").read()


def claims(sub="alice", roles=("AI.User",), iss="https://login.example.test/tenant/v2.0",
           aud="api://aigw", exp_in=600, **extra):
    now = int(time.time())
    c = {"sub": sub, "roles": list(roles), "iss": iss, "aud": aud, "iat": now, "exp": now + exp_in}
    c.update(extra)
    return c
