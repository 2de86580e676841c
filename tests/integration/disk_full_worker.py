"""A publish that fills the disk: run inside a mount namespace (``unshare --mount``), where it mounts a
small tmpfs as the storage root. ``python -m tests.integration.disk_full_worker DIR``; prints JSON:
what the failed insert raised, what readers saw after it, and what the insert after freeing space did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2026-11-01", tz="UTC")


def _rows(start: int, count: int, hour: int) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame(
        {
            "k": np.arange(start, start + count),
            "ts": [T0 + pd.Timedelta(hours=hour)] * count,
            "x": rng.random(count),
            "note": [f"row {i} " * 8 for i in range(count)],
        }
    )


def main(directory: str) -> None:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(root)], check=True)
    os.environ["FJORD_STORAGE__ROOT"] = (root / "fs").as_uri()
    import featurestore
    from fjord.projects import create_project

    create_project("fraud")
    store = featurestore.connect("fraud")
    fg = store.get_or_create_feature_group("tx", 1, primary_key=["k"], event_time="ts", online_enabled=True)
    fg.insert(_rows(0, 1_000, 0))
    filler = root / "filler"
    with filler.open("wb") as out:  # the disk is full from here on
        try:
            while True:
                out.write(b"\0" * 65_536)
                out.flush()
        except OSError:
            pass
    report: dict = {"free_bytes": os.statvfs(root).f_bavail * os.statvfs(root).f_frsize}
    try:
        fg.insert(_rows(1_000, 20_000, 1))
        report["full"] = "inserted"
    except Exception as exc:  # what a user sees
        report["full"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        report["exit_code"] = getattr(exc, "exit_code", None)
    report["after_full"] = {"commits": len(fg.commit_details()), "rows": len(fg.read())}
    filler.unlink()
    fg.insert(_rows(1_000, 20_000, 1))
    report["after_freeing"] = {"commits": len(fg.commit_details()), "rows": len(fg.read())}
    report["leftovers"] = sorted(str(p.relative_to(root)) for p in root.rglob("_tmp.*"))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
