"""Foundation benchmarks: Spark start-up, project environment build (cold, reused), pack time.

Each figure is measured beside the peer a user would otherwise use, in the same run:

- Spark session start-up, in a fresh process each time: ``fjord.spark.get_spark()`` against a plain
  ``SparkSession.builder.master("local[*]").getOrCreate()``.
- Project environment with one extra package (``pyjokes``): Fjord's build (resolved against the
  platform, layered over it) cold and reused, against a plain ``python -m venv`` + ``pip install``
  (which does not even carry the platform), and against a full per-project copy of the platform
  (``uv venv`` + ``uv pip install`` of every platform package: what cloning a base environment costs).
- Packing for cluster executors: venv-pack of Fjord's layered environment.

Run: ``make bench`` (or ``python -m bench.foundation --repeat 3``). Prints a Markdown table and writes
``bench/results/foundation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXTRA = "pyjokes==0.8.3"

_FJORD_SPARK = """
import time; t = time.perf_counter()
from fjord.spark import get_spark
spark = get_spark(app_name="bench"); spark.range(1).count()
print(time.perf_counter() - t)
"""
_PLAIN_SPARK = """
import time; t = time.perf_counter()
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[*]").appName("bench").getOrCreate(); spark.range(1).count()
print(time.perf_counter() - t)
"""


def _python(code: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def bench_spark(repeat: int, home: Path) -> dict[str, list[float]]:
    env = {
        **os.environ,
        "FJORD_HOME": str(home),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    runs: dict[str, list[float]] = {"fjord": [], "plain": []}
    for _ in range(repeat):  # alternate, so drift on a noisy machine hits both alike
        runs["fjord"].append(_python(_FJORD_SPARK, env))
        runs["plain"].append(_python(_PLAIN_SPARK, env))
    return runs


def _fjord_env_build(home: Path, extra_env: dict[str, str] | None = None) -> tuple[float, float, float, int]:
    """Cold build, reused build and pack of a project environment under a fresh FJORD_HOME."""
    code = f"""
import time, os
from fjord.projects import create_project
from fjord.envs import build_environment, pack_environment, spec_from_file
p = create_project("bench")
spec = spec_from_file("requirements.txt", "{EXTRA}\\n")
t = time.perf_counter(); env = build_environment(p, spec); cold = time.perf_counter() - t
t = time.perf_counter(); build_environment(p); reused = time.perf_counter() - t
t = time.perf_counter(); uri = pack_environment(p, env); pack = time.perf_counter() - t
print(cold, reused, pack, os.path.getsize(uri.removeprefix("file://")))
"""
    env = {**os.environ, "FJORD_HOME": str(home), **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    cold, reused, pack, size = out.stdout.split()
    return float(cold), float(reused), float(pack), int(size)


def bench_envs(repeat: int, work: Path) -> dict[str, list[float]]:
    from uv import find_uv_bin

    uv = str(find_uv_bin())
    keys = (
        "cold",
        "reused",
        "pack",
        "archive_bytes",
        "venv_pip",
        "full",
        "cold_cache",
        "venv_pip_cold_cache",
    )
    runs: dict[str, list[float]] = {k: [] for k in keys}
    platform = work / "platform.txt"
    freeze = subprocess.run(
        [uv, "pip", "freeze", "--python", sys.executable, "--exclude-editable"],
        capture_output=True,
        text=True,
    )
    platform.write_text(freeze.stdout + f"{EXTRA}\n")
    for i in range(repeat):
        cold, reused, pack, size = _fjord_env_build(work / f"home-{i}")
        runs["cold"].append(cold)
        runs["reused"].append(reused)
        runs["pack"].append(pack)
        runs["archive_bytes"].append(size)
        venv = work / f"plain-{i}"
        runs["venv_pip"].append(
            _timed([sys.executable, "-m", "venv", str(venv)])
            + _timed([str(venv / "bin" / "pip"), "install", "-q", EXTRA])
        )
    # Once each with empty package caches: both sides download from the index.
    runs["cold_cache"].append(
        _fjord_env_build(work / "home-nocache", {"UV_CACHE_DIR": str(work / "uv-empty")})[0]
    )
    venv = work / "plain-nocache"
    runs["venv_pip_cold_cache"].append(
        _timed([sys.executable, "-m", "venv", str(venv)])
        + _timed([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", EXTRA])
    )
    full = work / "full"  # once: a full copy of the platform is the expensive peer
    runs["full"].append(
        _timed([uv, "venv", "-q", "--python", sys.executable, str(full)])
        + _timed(
            [
                uv,
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--python",
                str(full / "bin" / "python"),
                "-r",
                str(platform),
            ]
        )
    )
    return runs


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fjord-bench-") as tmp:
        work = Path(tmp)
        spark = bench_spark(args.repeat, work / "spark-home")
        envs = bench_envs(args.repeat, work)
        full_size = subprocess.run(["du", "-sb", str(work / "full")], capture_output=True, text=True).stdout
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "repeat": args.repeat,
        "spark_start_s": spark,
        "env": envs,
        "full_copy_bytes": int(full_size.split()[0]) if full_size else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(results, indent=2))

    f, p = _median(spark["fjord"]), _median(spark["plain"])
    cold, reused, pip = _median(envs["cold"]), _median(envs["reused"]), _median(envs["venv_pip"])
    nocache, pip_nocache, full = envs["cold_cache"][0], envs["venv_pip_cold_cache"][0], envs["full"][0]
    pack, archive_kb = _median(envs["pack"]), _median(envs["archive_bytes"]) / 1e3
    rows = [
        ("Spark session start + first job", f"{f:.1f} s", f"{p:.1f} s plain builder", f"{f / p:.2f}"),
        (
            "project env, new spec (warm cache)",
            f"{cold:.2f} s",
            f"{pip:.2f} s venv + pip",
            f"{cold / pip:.2f}",
        ),
        (
            "project env, empty caches (1 run)",
            f"{nocache:.2f} s",
            f"{pip_nocache:.2f} s venv + pip",
            f"{nocache / pip_nocache:.2f}",
        ),
        (
            "project env, new spec (warm cache)",
            f"{cold:.2f} s",
            f"{full:.1f} s full platform copy",
            f"{cold / full:.3f}",
        ),
        (
            "project env, unchanged spec (reuse)",
            f"{reused:.2f} s",
            f"{pip:.2f} s venv + pip",
            f"{reused / pip:.2f}",
        ),
        (
            "pack for executors",
            f"{pack:.2f} s, {archive_kb:.0f} kB",
            f"{results['full_copy_bytes'] / 1e9:.1f} GB full copy",
            "",
        ),
    ]
    print(f"| measure (median of {args.repeat} unless noted) | Fjord | peer | Fjord / peer |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
