"""What the model server's guards cost on the predict path: input rules and the bearer token.

    python -m bench.serve_guards [--runs 3] [--requests 2000]

Two measurements, in one run, on one machine:

- in process: ``InputRules.check`` of the ETL's ``transactions`` suite on a body of 1 and of 50
  transactions (what the guard adds to each request, without HTTP);
- over HTTP: the same server and model (``tests/serving_models.py``: x, y -> sum) plain, with input
  rules (reject mode) and with a token, called one request at a time over one keep-alive connection,
  the three configurations interleaved round by round, each first in turn, so that the machine's
  drift hits them alike.
  The plain server is the limit the guarded ones are measured against.

Raw results go to ``bench/results/serve_guards.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "serve_guards.json"
TRANSACTION = {"cc_num": 4111, "amount": 42.5, "ts": "2026-12-01T10:00:00Z", "lat": 52.5, "lon": 13.4,
               "category": "grocery", "channel": "pos"}  # fmt: skip


def in_process(repeats: int = 20_000) -> dict[str, float]:
    """Microseconds per ``check`` of a 1- and a 50-transaction body (median of 5 batches)."""
    from jobs.serve.input_rules import InputRules

    rules = InputRules.from_flag("transactions", "reject")
    out = {}
    for size in (1, 50):
        doc = {"instances": [TRANSACTION] * size}
        batches = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats // size):
                rules.check(doc)
            batches.append((time.perf_counter() - started) / (repeats // size) * 1e6)
        out[f"check_us_{size}"] = round(statistics.median(batches), 2)
    return out


def over_http(runs: int, requests: int) -> dict[str, Any]:
    from tests.integration.serving_server import ServerProcess
    from tests.serving_models import write_version

    tmp = Path(tempfile.mkdtemp(prefix="fjord-bench-guards-"))
    write_version(tmp / "m", 1)
    suite = tmp / "rules.json"
    rule = {"type": "expect_column_values_to_be_between", "on_failure": "reject"}
    suite.write_text(json.dumps({"expectations": [
        {**rule, "kwargs": {"column": "x", "min_value": -1e6, "max_value": 1e6}},
        {**rule, "kwargs": {"column": "y", "min_value": -1e6, "max_value": 1e6}},
    ]}))  # fmt: skip
    (tmp / "token").write_text("bench-token")
    flags = {
        "plain": [],
        "input_rules": [f"--input_rules={suite}"],
        "token": [f"--auth_token_file={tmp / 'token'}"],
    }
    headers = {"token": {"Authorization": "Bearer bench-token"}}
    servers = {
        name: ServerProcess(
            "--model_name=m", f"--model_base_path={tmp / 'm'}", *extra, log=tmp / f"{name}.log"
        )
        for name, extra in flags.items()
    }
    body = {"instances": [{"x": 1.0, "y": 2.0}]}
    latencies: dict[str, list[float]] = {name: [] for name in flags}
    try:
        for name, server in servers.items():
            server.wait_ready("m") if name != "token" else _wait(server, headers["token"])
        names = list(servers)
        for run in range(runs):
            for name in names[run % len(names) :] + names[: run % len(names)]:  # each goes first in turn
                server = servers[name]
                with httpx.Client(headers=headers.get(name, {}), timeout=30) as client:
                    url = f"{server.url}/v1/models/m:predict"
                    for _ in range(200):  # warm the connection and the model
                        client.post(url, json=body).raise_for_status()
                    started = time.perf_counter()
                    for _ in range(requests):
                        client.post(url, json=body).raise_for_status()
                    latencies[name].append((time.perf_counter() - started) / requests * 1e6)
    finally:
        for server in servers.values():
            server.stop()
    plain = statistics.median(latencies["plain"])
    return {
        name: {
            "us_per_request_runs": [round(v, 1) for v in values],
            "us_per_request_median": round(statistics.median(values), 1),
            "vs_plain": round(statistics.median(values) / plain, 3),
        }
        for name, values in latencies.items()
    }


def _wait(server: Any, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/v1/models/m", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the token server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "in_process": in_process(),
        "over_http": over_http(args.runs, args.requests),
        "runs": args.runs,
        "requests_per_run": args.requests,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
