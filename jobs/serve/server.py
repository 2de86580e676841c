"""The model server: ``python -m jobs.serve.server`` with tensorflow_model_server's flags.

    python -m jobs.serve.server --port=8500 --rest_api_port=8501 \\
        --model_name=fraud --model_base_path=/data/Projects/fraud/Models/fraud
    python -m jobs.serve.server --model_config_file=models.config \\
        --model_config_file_poll_wait_seconds=2 --enable_batching \\
        --batching_parameters_file=batching.config --monitoring_config_file=monitoring.config

Any TF Serving client (REST or gRPC) talks to it unchanged, and on a cluster the real
``tensorflow/serving`` image serves the same directory with the same config file. Fjord's own flags:
``--bind_address`` (loopback by default), ``--auth_token_file`` (bearer token for REST),
``--model_backend`` (auto, savedmodel, tflite), ``--inference_logging`` (ALL, PREDICTIONS,
MODEL_INPUTS, NONE) with ``--kafka_bootstrap_servers`` and ``--kafka_topic``, and
``--feature_view`` (fill requests' features from the online store; docs/serving.md) and
``--passthrough`` (request fields logged with the call, never fed to the model).

Exit codes: 0 after a clean stop (SIGTERM, SIGINT), 2 for bad flags or config files (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from fjord.errors import ConfigError, FjordError
from jobs.serve.backends import BACKEND_CHOICES
from jobs.serve.config import (
    ModelConfig,
    read_batching_parameters,
    read_model_config,
    read_monitoring_path,
)
from jobs.serve.inference_log import MODES, InferenceLogger, default_topic
from jobs.serve.input_rules import MODES as INPUT_RULE_MODES
from jobs.serve.input_rules import InputRules
from jobs.serve.passthrough import Passthrough, parse_flags
from jobs.serve.routing import Router, Split, read_splits

log = logging.getLogger("fjord.serve")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _int_in(low: int, high: int) -> Any:
    """An argparse type: an integer in [low, high], or a usage error naming the range (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in {low}..{high}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < 10**7:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.serve.server",
        description="A TensorFlow-Serving-compatible model server (REST and gRPC).",
    )
    add = p.add_argument
    add("--port", type=_int_in(0, 65_535), default=8500, help="gRPC port (0: no gRPC server)")
    add("--rest_api_port", type=_int_in(0, 65_535), default=8501, help="REST port")
    add("--rest_api_num_threads", type=_int_in(1, 1_024), default=4, help="threads running model calls")
    add("--rest_api_timeout_in_ms", type=_int_in(1, 86_400_000), default=30_000, help="REST call deadline")
    add("--model_name", default="default", help="name of the one model (with --model_base_path)")
    add("--model_base_path", default=None, help="directory of the model's numbered versions")
    add(
        "--model_config_file",
        default=None,
        help="ModelServerConfig text file: a path, or a URI of any Fjord filesystem (hdfs://, s3://)",
    )
    add("--model_config_file_poll_wait_seconds", type=_seconds, default=0, help="re-read config (0: never)")
    add("--file_system_poll_wait_seconds", type=_seconds, default=1, help="look for new versions (0: once)")
    add("--enable_batching", type=_bool, nargs="?", const=True, default=False, help="dynamic batching")
    add("--batching_parameters_file", type=Path, default=None, help="BatchingParameters text file")
    add("--monitoring_config_file", type=Path, default=None, help="MonitoringConfig (Prometheus) text file")
    add("--bind_address", default="127.0.0.1", help="address both servers bind (Fjord)")
    add(
        "--auth_token_file",
        type=Path,
        default=None,
        help="file holding the bearer token REST and gRPC calls must carry (Fjord)",
    )
    add(
        "--allow_reload_config",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="let gRPC HandleReloadConfigRequest replace the served models (Fjord; off: refused)",
    )
    add("--model_backend", choices=BACKEND_CHOICES, default="auto", help="what runs the model (Fjord)")
    add(
        "--completion_marker",
        default="",
        help="file a version needs before it loads (default none, as "
        "TF Serving; Fjord's own servers pass _SUCCESS)",
    )
    add("--inference_logging", choices=MODES, default="NONE", help="what goes to Kafka (Fjord)")
    add("--kafka_bootstrap_servers", default=None, help="default: kafka.bootstrap_servers (Fjord)")
    add(
        "--kafka_topic",
        action="append",
        default=[],
        metavar="TOPIC|MODEL=TOPIC",
        help="inference log topic of every model, or of one (repeatable; default: <model>_inference_log)",
    )
    add("--max_body_bytes", type=_int_in(1, 2**40), default=64 * 1024 * 1024, help="largest REST body")
    add("--feature_view", default=None, help="PROJECT/VIEW[/VERSION]: fill features online (Fjord)")
    add("--transformer", default=None, help="module:function turning looked-up rows into model inputs")
    add(
        "--input_rules",
        default=None,
        help="an ETL expectation suite (transactions) or suite file whose "
        "row-wise rules every request must keep (Fjord)",
    )
    add(
        "--input_rules_mode",
        choices=INPUT_RULE_MODES,
        default="reject",
        help="reject: a 400 naming the rule; flag: served, the violations logged (Fjord)",
    )
    add(
        "--passthrough",
        action="append",
        default=[],
        metavar="MODEL=FIELD[,FIELD]",
        help="request fields of MODEL logged with the call, never fed to it, e.g. fraud=tid (Fjord)",
    )
    add(
        "--routing_file",
        default=None,
        help="JSON of serving -> canary split, re-read with the model config (Fjord: jobs/serve/routing.py)",
    )
    add("--log_level", default="WARNING", help="Python log level")
    return p


def model_configs(args: argparse.Namespace) -> list[ModelConfig]:
    if args.model_config_file is not None:
        if args.model_base_path is not None:
            raise ConfigError("give --model_config_file or --model_base_path, not both")
        return read_model_config(_local_config(args.model_config_file)[0])
    if args.model_base_path is None:
        raise ConfigError("no model to serve: give --model_base_path or --model_config_file")
    return [ModelConfig(args.model_name, args.model_base_path)]


def _local_config(spec: str) -> tuple[Path, str]:
    """``--model_config_file`` as a local file, and what tells one version of it from the next (its
    mtime; for a remote file, its text, fetched whole: a cluster's config is on the shared filesystem)."""
    from fjord.fs import SharedFS
    from fjord.fs.backends import local_path

    on_disk = local_path(spec)
    if on_disk is not None:
        path = Path(on_disk)
        try:
            return path, str(path.stat().st_mtime)
        except OSError:
            return path, ""

    parent, _, name = spec.rpartition("/")
    try:
        text = SharedFS(parent).read_text(name)
    except (OSError, FjordError) as exc:
        raise ConfigError(f"--model_config_file {spec}: cannot read it ({exc})") from None
    local = Path(tempfile.gettempdir()) / f"fjord-{os.getpid()}-{name}"  # models.config, routing.json
    local.write_text(text)
    return local, text


class ModelServer:
    """The REST and gRPC servers over one model manager, in one process."""

    def __init__(self, args: argparse.Namespace) -> None:
        from jobs.serve.handlers import Handlers
        from jobs.serve.metrics import Metrics
        from jobs.serve.models import ModelManager

        self.args = args
        self.configs = model_configs(args)  # bad flags and files fail before anything loads
        batching = read_batching_parameters(args.batching_parameters_file) if args.enable_batching else None
        self.metrics_path = read_monitoring_path(args.monitoring_config_file)
        token = None
        if args.auth_token_file is not None:
            try:
                token = args.auth_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{args.auth_token_file}: cannot read the token ({exc.strerror})") from None
            if not token:
                raise ConfigError(f"{args.auth_token_file} is empty")
        self.token = token
        self.metrics = Metrics()
        self.manager = ModelManager(
            backend=args.model_backend,
            batching=batching,
            threads=args.rest_api_num_threads,
            completion_marker=args.completion_marker,
            metrics=self.metrics,
        )
        topics = dict(t.split("=", 1) if "=" in t else ("", t) for t in args.kafka_topic)
        self.logger = InferenceLogger(
            args.inference_logging,
            lambda model: topics.get(model) or topics.get("") or default_topic(model),
            self.metrics,
            bootstrap_servers=args.kafka_bootstrap_servers,
        )
        enrich = None
        if args.feature_view:
            from jobs.serve.features import FeatureEnricher

            enrich = FeatureEnricher.from_flag(args.feature_view, self.metrics, args.transformer)
        rules = InputRules.from_flag(args.input_rules, args.input_rules_mode) if args.input_rules else None
        passthrough = Passthrough(parse_flags(args.passthrough))
        self.router = Router(self.manager, self._splits())
        self.handlers = Handlers(
            self.manager,
            self.metrics,
            self.logger,
            timeout_s=args.rest_api_timeout_in_ms / 1000,
            enrich=enrich,
            rules=rules,
            passthrough=passthrough,
            router=self.router,
        )
        self._stop = asyncio.Event()
        self._config_mtime = self._mtime()

    def _splits(self) -> dict[str, Split]:
        spec = self.args.routing_file
        return read_splits(_local_config(spec)[0]) if spec is not None else {}

    def _mtime(self) -> str | None:
        """What changes when the config file does (None: no config file)."""
        spec = self.args.model_config_file
        if spec is None:
            return None
        routing = self.args.routing_file
        return _local_config(spec)[1] + (f"|{_local_config(routing)[1]}" if routing else "")

    def reload_proto(self, config: Any) -> None:
        """HandleReloadConfigRequest: serve the models of a ModelServerConfig proto."""
        import tempfile

        from google.protobuf import text_format

        with tempfile.NamedTemporaryFile("w", suffix=".config") as handle:
            handle.write(text_format.MessageToString(config))
            handle.flush()
            self.manager.configure(read_model_config(Path(handle.name)))

    def _watch_config(self) -> None:
        wait = self.args.model_config_file_poll_wait_seconds
        while not self._stopped.wait(wait):
            try:
                mtime = self._mtime()
                if mtime is None or mtime == self._config_mtime:
                    continue
                self._config_mtime = mtime
                self.manager.configure(read_model_config(_local_config(self.args.model_config_file)[0]))
                self.router.splits = self._splits()
                log.warning("model config %s reloaded", self.args.model_config_file)
            except FjordError as exc:
                log.error("model config not reloaded, the old one stays: %s", exc.one_line())

    async def serve(self) -> None:
        import grpc
        import uvicorn

        from jobs.serve.grpc_api import BearerToken, servicers
        from jobs.serve.rest import RestApp

        args = self.args
        self.manager.configure(self.configs)
        self.manager.start(args.file_system_poll_wait_seconds)
        # TensorFlow's import leaves millions of long-lived objects; each full collection walked them
        # all, under the GIL, in the middle of calls: p99 at 16 clients 215 -> 15 ms once they are
        # frozen out of the collector's reach (docs/serving.md). New garbage is collected as before.
        gc.collect()
        gc.freeze()
        self._stopped = threading.Event()
        if args.model_config_file is not None and args.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=self._watch_config, name="config-watcher", daemon=True).start()
        app = RestApp(
            self.handlers,
            token=self.token,
            metrics_path=self.metrics_path,
            max_body_bytes=args.max_body_bytes,
        )
        rest = uvicorn.Server(
            uvicorn.Config(
                app,
                host=args.bind_address,
                port=args.rest_api_port,
                loop="none",
                http="httptools",
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_keep_alive=30,
                backlog=2048,
            )
        )
        # This process owns SIGTERM/SIGINT (one clean stop of both servers); uvicorn would re-raise them.
        rest.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        grpc_server = None
        if args.port:
            grpc_server = grpc.aio.server(
                options=[("grpc.max_receive_message_length", args.max_body_bytes)],
                interceptors=[BearerToken(self.token)] if self.token else [],
            )
            reload = self.reload_proto if args.allow_reload_config else None
            for servicer, add in servicers(self.handlers, reload, max_elements=args.max_body_bytes):
                add(servicer, grpc_server)
            grpc_server.add_insecure_port(f"{args.bind_address}:{args.port}")
            await grpc_server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        sock = socket.socket(socket.AF_INET6 if ":" in args.bind_address else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((args.bind_address, args.rest_api_port))
        except OSError as exc:
            raise ConfigError(
                f"cannot bind {args.bind_address}:{args.rest_api_port}: {exc.strerror}"
            ) from None
        rest_task = asyncio.create_task(rest.serve(sockets=[sock]))
        print(
            f"serving {', '.join(self.manager.model_names())}: REST http://{args.bind_address}:{args.rest_api_port}"
            + (f", gRPC {args.bind_address}:{args.port}" if args.port else ""),
            flush=True,
        )
        stop_task = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({rest_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if rest_task in done and rest_task.exception() is not None:
            raise ConfigError(f"REST server failed: {rest_task.exception()}")
        rest.should_exit = True
        await rest_task
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        self._stopped.set()
        self.handlers.close()
        self.manager.stop()
        self.logger.close()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server = ModelServer(args)
        import uvloop

        uvloop.run(server.serve())
    except FjordError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
