"""Both directions of the token interop, judged by Airflow's own code (apache-airflow-core from
PyPI), never by a validator configured here.

usage:
  airflow_tokens.py validate KEYS ALG AUDIENCE TOKEN_FILE EXPECTED_SUB
      Airflow's JWTValidator judges a broker token. KEYS is the broker's JWKS file (read as
      Airflow reads `[api_auth] trusted_jwks_url` when it is a path), or secret:<file> for
      HS512 (Airflow's `jwt_secret`). ALG is the `[api_auth] jwt_algorithm` (GUESS for
      Airflow's default). Exit 0 when the honest token validates with the expected claims and
      the controls (a tampered payload, a wrong audience) are refused.
  airflow_tokens.py workload KIND OUT_DIR SUB
      Airflow's JWTGenerator makes a workload token the way its executors do
      (BaseWorkloadSchema.generate_token) with a fresh key of KIND (Ed25519, RSA or secret),
      written to OUT_DIR/workload.jwt, with the keys the broker needs: OUT_DIR/jwks.json as
      Airflow's key_to_jwk_dict writes them, or OUT_DIR/jwt_secret.
"""

import asyncio
import json
import os
import secrets
import sys


def validate(keys: str, alg: str, audience: str, token_file: str, sub: str) -> int:
    from airflow.api_fastapi.auth.tokens import JWKS, JWTValidator

    with open(token_file) as f:
        token = f.read().strip()

    def validator(audience: str) -> JWTValidator:
        if keys.startswith("secret:"):
            with open(keys[len("secret:"):]) as f:
                secret = f.read().strip()
            return JWTValidator(secret_key=secret, audience=audience, algorithm=[alg], leeway=10)
        return JWTValidator(jwks=JWKS(url=keys), audience=audience, algorithm=[alg], leeway=10)

    def judge(token: str, audience: str) -> dict:
        return asyncio.run(validator(audience).avalidated_claims(token))

    claims = judge(token, audience)
    if claims.get("sub") != sub or claims.get("scope") != "execution":
        print(f"unexpected claims: {claims}", file=sys.stderr)
        return 1
    header, payload, signature = token.split(".")
    flipped = "A" if payload[-2] != "A" else "B"
    tampered = ".".join([header, payload[:-2] + flipped + payload[-1], signature])
    for name, attempt in [
        ("tampered payload", lambda: judge(tampered, audience)),
        ("wrong audience", lambda: judge(token, "urn:someone-else")),
    ]:
        try:
            attempt()
        except Exception:
            continue
        print(f"control failed: {name} was accepted", file=sys.stderr)
        return 1
    print(json.dumps({"validator": "airflow", "alg": alg, "sub": claims["sub"]}))
    return 0


def workload(kind: str, out_dir: str, sub: str) -> int:
    from airflow.api_fastapi.auth.tokens import (
        JWTGenerator,
        generate_private_key,
        key_to_jwk_dict,
    )
    from airflow.executors.workloads.base import BaseWorkloadSchema

    audience = "urn:airflow.apache.org:task"
    if kind == "secret":
        secret = secrets.token_urlsafe(64)
        write(os.path.join(out_dir, "jwt_secret"), secret + "\n")
        generator = JWTGenerator(secret_key=secret, audience=audience, valid_for=600)
    else:
        key = generate_private_key(kind, 2048)
        write(
            os.path.join(out_dir, "jwks.json"),
            json.dumps({"keys": [key_to_jwk_dict(key)]}),
        )
        generator = JWTGenerator(private_key=key, audience=audience, valid_for=600)
    token = BaseWorkloadSchema.generate_token(sub, generator)
    write(os.path.join(out_dir, "workload.jwt"), token)
    print(json.dumps({"generator": "airflow", "kind": kind, "alg": generator.algorithm, "kid": generator.kid}))
    return 0


def write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "validate":
        return validate(*args)
    if command == "workload":
        return workload(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
