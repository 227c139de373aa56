#!/usr/bin/env python3
"""A token issuer for the `token` test registry of scripts/registries.sh.

For manual checks and for `registries.sh seed` only: the Rust suite runs an
issuer of its own on the same address (see docs/TESTING.md, "Registries").
It implements the GET side of Docker's token protocol:

    GET /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...]
    Authorization: Basic base64(USER:PASSWORD)

and answers {"token", "access_token", "expires_in", "issued_at"} with a JWT
that distribution 2.8 accepts (claims: docs/TESTING.md). Requests without
the right credentials get 401; a service other than --service gets 400.
Every requested action is granted to the user.

Standard library only; signs with the openssl command (ES256 with an EC P-256
key, RS256 with an RSA key). Tokens and passwords are never logged.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, data=None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, check=True,
                          capture_output=True).stdout


def der_len(buf, i):
    n = buf[i]
    if n < 0x80:
        return n, i + 1
    k = n & 0x7F
    return int.from_bytes(buf[i + 1:i + 1 + k], "big"), i + 1 + k


def ecdsa_der_to_raw(der: bytes, size: int) -> bytes:
    """openssl's DER ECDSA-Sig-Value (SEQUENCE {r INTEGER, s INTEGER}) to the
    JWS form r || s, each left-padded to the curve size."""
    assert der[0] == 0x30, "not a DER sequence"
    _, i = der_len(der, 1)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02, "not a DER integer"
        n, i = der_len(der, i + 1)
        v = int.from_bytes(der[i:i + n], "big")
        out += v.to_bytes(size, "big")
        i += n
    return out


def libtrust_kid(spki_der: bytes) -> str:
    """The key ID distribution 2.8 (docker/libtrust) gives a public key:
    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32 without
    padding, in 12 groups of 4 joined by ':'."""
    s = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


class Signer:
    def __init__(self, key_path: str, cert_path: str, x5c: bool):
        self.key_path = key_path
        text = openssl("pkey", "-in", key_path, "-noout", "-text").decode()
        if "ASN1 OID: prime256v1" in text or "NIST CURVE: P-256" in text:
            self.alg, self.ec_size = "ES256", 32
        elif "Private-Key" in text and "modulus" in text:
            self.alg, self.ec_size = "RS256", 0
        else:
            sys.exit(f"token-issuer: {key_path}: need an EC P-256 or RSA key")
        spki = openssl("pkey", "-in", key_path, "-pubout", "-outform", "DER")
        cert_spki = openssl("x509", "-in", cert_path, "-noout", "-pubkey")
        cert_spki = openssl("pkey", "-pubin", "-outform", "DER", data=cert_spki)
        if spki != cert_spki:
            sys.exit(f"token-issuer: {key_path} is not the key of {cert_path}")
        self.kid = libtrust_kid(spki)
        cert_der = openssl("x509", "-in", cert_path, "-outform", "DER")
        self.header = {"typ": "JWT", "alg": self.alg}
        if x5c:
            self.header["x5c"] = [base64.b64encode(cert_der).decode()]
        else:
            self.header["kid"] = self.kid

    def sign(self, claims: dict) -> str:
        signing_input = (b64url(json.dumps(self.header, separators=(",", ":")).encode())
                         + "." + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = openssl("dgst", "-sha256", "-sign", self.key_path, data=signing_input.encode())
        if self.ec_size:
            sig = ecdsa_der_to_raw(sig, self.ec_size)
        return signing_input + "." + b64url(sig)


def parse_scope(scope: str):
    # TYPE:NAME:ACTIONS; NAME may hold ':' (e.g. a host:port in other types)
    typ, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not typ or not name:
        return None
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


def make_handler(args, signer: Signer):
    want = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "docker-delta-test-issuer"

        def log_message(self, fmt, *a):  # the path only: no query, no header
            sys.stderr.write("%s %s\n" % (self.command, urlsplit(self.path).path))

        def reply(self, code, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path != "/token":
                return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
            q = parse_qs(url.query)
            service = q.get("service", [""])[0]
            if service != args.service:
                return self.reply(400, {"details": f"unknown service {service!r}"})
            if not secrets.compare_digest(self.headers.get("Authorization", ""), want):
                return self.reply(401, {"details": "bad or missing credentials"},
                                  [("WWW-Authenticate", 'Basic realm="docker-delta-test"')])
            # one scope parameter per resource; some clients join them with spaces
            access = []
            for param in q.get("scope", []):
                for scope in param.split(" "):
                    a = parse_scope(scope)
                    if a:
                        access.append(a)
            now = int(time.time())
            claims = {
                "iss": args.issuer,
                "sub": args.user,
                "aud": args.service,
                "exp": now + args.expires_in,
                "nbf": now - 1,
                "iat": now,
                "jti": secrets.token_hex(16),
                "access": access,
            }
            token = signer.sign(claims)
            self.reply(200, {
                "token": token,
                "access_token": token,
                "expires_in": args.expires_in,
                "issued_at": datetime.fromtimestamp(now, timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%SZ"),
            })

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT (loopback)")
    p.add_argument("--key", required=True, help="PEM private key (EC P-256 or RSA)")
    p.add_argument("--cert", required=True, help="PEM certificate of that key, "
                   "the registry's rootcertbundle")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True,
                   help="file holding the password (not on the command line)")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--x5c", action="store_true",
                   help="put the certificate in the header (x5c) instead of a kid")
    p.add_argument("--pid-file")
    args = p.parse_args()
    with open(args.password_file) as f:
        args.password = f.read().strip()
    signer = Signer(args.key, args.cert, args.x5c)
    host, _, port = args.listen.rpartition(":")
    httpd = ThreadingHTTPServer((host, int(port)), make_handler(args, signer))
    if args.pid_file:
        tmp = args.pid_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, args.pid_file)
    how = "x5c" if args.x5c else "kid"
    sys.stderr.write(f"token-issuer: {signer.alg}, key named by {how} (kid {signer.kid}), "
                     f"on http://{args.listen}/token\n")
    sys.stderr.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
