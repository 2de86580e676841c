"""Fetch Fjord's JVM artifacts from Maven Central into ``.jvm/<group>/``, checked against ``jars.lock``.

Run by ``make`` (plain ``python3``, standard library only, before ``.venv`` exists)::

    python3 fjord/jvm/fetch.py            # fetch what is missing or stale, verify every jar's SHA-256
    python3 fjord/jvm/fetch.py --lock     # after changing a pom.xml: fetch and rewrite jars.lock

Each group (``kafka``, ``hdfs``, ``spark``) is a ``pom.xml`` resolved with Maven's
``dependency:copy-dependencies`` into a temporary folder, which replaces ``.jvm/<group>`` only when every
jar matches the lock and none is missing or extra: a half-fetched or tampered group is never used.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = ("kafka", "hdfs", "spark")
LOCK = HERE / "jars.lock"
STAMP = ".fetched"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lock() -> dict[str, dict[str, str]]:
    """``{group: {jar: sha256}}`` from jars.lock (lines: ``<sha256>  <group>/<jar>``)."""
    locked: dict[str, dict[str, str]] = {group: {} for group in GROUPS}
    if not LOCK.exists():
        return locked
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            group, jar = name.split("/", 1)
            locked.setdefault(group, {})[jar] = digest
    return locked


def _stamp_for(group: str) -> str:
    # A group is stale when its pom or its lines of the lock change.
    lines = sorted(f"{d}  {group}/{j}" for j, d in read_lock()[group].items())
    return hashlib.sha256((HERE / group / "pom.xml").read_bytes() + "\n".join(lines).encode()).hexdigest()


def _resolve(group: str, out: Path) -> dict[str, str]:
    if shutil.which("mvn") is None:
        sys.exit("error: Maven (mvn) is needed to fetch the JVM jars (Debian: apt-get install maven)")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "mvn", "-q", "-B", "-s", str(HERE / "settings.xml"), "-f", str(HERE / group / "pom.xml"),
        "dependency:copy-dependencies", f"-DoutputDirectory={out}", "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        errors = [line for line in result.stdout.splitlines() if "[ERROR]" in line] or ["no output"]
        sys.exit(f"error: Maven could not fetch the {group} jars: {errors[0]}")
    return {jar.name: _sha256(jar) for jar in sorted(out.glob("*.jar"))}


def fetch(dest: Path, *, relock: bool = False) -> None:
    """Bring every group in ``dest`` up to date with its pom and the lock."""
    locked = read_lock()
    fetched: dict[str, dict[str, str]] = {}
    for group in GROUPS:
        target = dest / group
        if not relock and (target / STAMP).is_file() and (target / STAMP).read_text() == _stamp_for(group):
            continue
        print(f"fetching the {group} jars from Maven Central")
        staging = dest / f".{group}.tmp"
        jars = _resolve(group, staging)
        fetched[group] = jars
        if not relock:
            _verify(group, jars, locked[group])
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    if relock:
        lines = [
            "# SHA-256 of every JVM jar Fjord runs (fjord/jvm/fetch.py --lock writes it; make checks it)"
        ]
        for group in GROUPS:
            lines += [f"{digest}  {group}/{jar}" for jar, digest in sorted(fetched[group].items())]
        LOCK.write_text("\n".join(lines) + "\n")
    for group in fetched:
        (dest / group / STAMP).write_text(_stamp_for(group))


def _verify(group: str, jars: dict[str, str], locked: dict[str, str]) -> None:
    missing, extra = sorted(set(locked) - set(jars)), sorted(set(jars) - set(locked))
    changed = sorted(jar for jar in set(jars) & set(locked) if jars[jar] != locked[jar])
    if missing or extra or changed:
        problem = (
            f"changed: {changed[0]}"
            if changed
            else f"extra: {extra[0]}"
            if extra
            else f"missing: {missing[0]}"
        )
        sys.exit(
            f"error: the {group} jars do not match fjord/jvm/jars.lock ({problem}); "
            "after editing a pom.xml run: python3 fjord/jvm/fetch.py --lock"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=HERE.parent.parent / ".jvm", help="default: ./.jvm")
    parser.add_argument("--lock", action="store_true", help="fetch every group and rewrite jars.lock")
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    fetch(args.dest.resolve(), relock=args.lock)


if __name__ == "__main__":
    main()
