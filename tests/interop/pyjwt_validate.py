"""Validates bulkhead broker tokens with PyJWT, configured the way Airflow's JWTValidator is:
explicit algorithms, the audience, required exp/iat/nbf, 10 s leeway, the key chosen by kid
from the broker's JWKS (or the shared HS512 secret). Written against PyJWT's public API only.

usage: pyjwt_validate.py KEYS ALG AUDIENCE TOKEN_FILE EXPECTED_SUB
KEYS is a JWKS file, or secret:<file> for HS512.
Exit 0 when the honest token validates with the expected claims and the two controls (a
tampered payload, a wrong audience) are refused.
"""

import json
import sys

import jwt


def key_for(keys: str, token: str):
    if keys.startswith("secret:"):
        with open(keys[len("secret:"):], "rb") as f:
            return f.read().rstrip(b"\r\n")
    with open(keys) as f:
        jwks = jwt.PyJWKSet.from_dict(json.load(f))
    kid = jwt.get_unverified_header(token)["kid"]
    for key in jwks.keys:
        if key.key_id == kid:
            return key.key
    raise SystemExit(f"kid {kid!r} not in the JWKS")


def decode(token: str, key, alg: str, audience: str) -> dict:
    return jwt.decode(
        token,
        key,
        algorithms=[alg],
        audience=audience,
        options={"require": ["exp", "iat", "nbf"]},
        leeway=10,
    )


def main() -> int:
    keys, alg, audience, token_file, sub = sys.argv[1:6]
    with open(token_file) as f:
        token = f.read().strip()
    key = key_for(keys, token)
    claims = decode(token, key, alg, audience)
    if claims.get("sub") != sub or claims.get("scope") != "execution":
        print(f"unexpected claims: {claims}", file=sys.stderr)
        return 1
    if len(claims.get("jti", "")) != 32:
        print(f"unexpected jti: {claims}", file=sys.stderr)
        return 1
    header, payload, signature = token.split(".")
    tampered = ".".join([header, payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1], signature])
    for name, attempt in [
        ("tampered payload", lambda: decode(tampered, key, alg, audience)),
        ("wrong audience", lambda: decode(token, key, alg, "urn:someone-else")),
    ]:
        try:
            attempt()
        except jwt.InvalidTokenError:
            continue
        print(f"control failed: {name} was accepted", file=sys.stderr)
        return 1
    print(json.dumps({"alg": alg, "kid": jwt.get_unverified_header(token).get("kid"), "sub": claims["sub"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
