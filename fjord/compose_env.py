"""``make compose-env``: the ``.env`` docker-compose.yml reads its secrets from, generated.

docker-compose.yml writes no password, key or token: each is ``${NAME:?...}``, and compose stops with
that message while one is missing. This writes every one of them, random, to ``.env`` with mode 600,
and never over an existing file (its secrets already guard data: rotating them is a deliberate act).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

from fjord.private import write_private

# name -> how it is made (Airflow's Fernet key and Spark's UI key are 32 url-safe base64 bytes; the
# rest are free text)
SECRETS = {
    "FJORD_POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    "FJORD_REDIS_PASSWORD": lambda: secrets.token_urlsafe(24),
    "FJORD_AIRFLOW_PASSWORD": lambda: secrets.token_urlsafe(18),
    "FJORD_AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "FJORD_AIRFLOW_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "FJORD_AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "FJORD_MLFLOW_PASSWORD": lambda: secrets.token_urlsafe(18),
    "FJORD_MLFLOW_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "FJORD_KAFKA_PASSWORD": lambda: secrets.token_urlsafe(24),
    "FJORD_MODEL_TOKEN": lambda: secrets.token_urlsafe(32),
    "FJORD_SPARK_SECRET": lambda: secrets.token_urlsafe(32),  # spark.authenticate's, for every RPC
    # The Spark web UIs' JWSFilter key: 256 bits, url-safe base64, as Spark decodes it
    "FJORD_SPARK_UI_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
}
SETTINGS = {"FJORD_BIND_ADDRESS": "127.0.0.1"}  # published ports: loopback unless changed here


def write_env(path: Path) -> None:
    """Write ``path`` (mode 600) with every secret generated; refuse to replace an existing file."""
    if path.exists():
        raise FileExistsError(
            f"{path} exists: its secrets guard the cluster's data; edit it, or remove it first"
        )
    lines = [f"{name}={make()}" for name, make in SECRETS.items()]
    lines += [f"{name}={value}" for name, value in SETTINGS.items()]
    write_private(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else ".env")
    try:
        write_env(path)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} (mode 600): {', '.join(SECRETS)}; FJORD_BIND_ADDRESS=127.0.0.1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
