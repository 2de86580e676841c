"""Alerts: a window that drifted or failed too often, recorded once, and sent to Airflow once.

When a window becomes final the monitor checks it against the thresholds: dataset drift (the share
of drifted features) and the error rate. Each finding is an alert row with a deterministic id
(model/version/window/kind), so a replayed micro-batch produces the same rows. The first alert of a
model starts a retraining run: it is posted as an event on the Airflow asset ``fjord://drift/<project>/<model>``
(``fraud_retrain`` is scheduled on it) with the window and its scores in ``extra``. Later alerts within
the cool-down (counted in event time, from the window of the last alert posted) are recorded as
``suppressed``: a sustained drift starts one run, not one per window.

Posting happens after the alert is committed. A post that fails (Airflow away) leaves the alert
``pending`` and is retried at the next micro-batch. Before posting, the monitor looks for an event
already carrying the alert's id (a crash between the post and its record), so a retry never starts
a second run. The run an event started is read back from Airflow (``created_dagruns``) and recorded.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs.monitor.windows import Thresholds

log = logging.getLogger("fjord.monitor.alerts")


def findings(summary: dict[str, Any], thresholds: Thresholds) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, message, detail) of each threshold a final window crossed."""
    found = []
    if summary.get("drift"):
        scores = {
            name: {k: round(v, 4) for k, v in f.items() if k in ("psi", "wasserstein", "js")}
            for name, f in summary["features"].items()
            if f.get("drifted")
        }
        found.append((
            "drift",
            f"{len(scores)} of {len(summary['features'])} features drifted "
            f"({', '.join(sorted(scores))}; share {summary['drift_share']:.2f} >= {thresholds.drift_share})",
            {"drift_share": summary["drift_share"], "drifted": scores},
        ))  # fmt: skip
    rate = summary.get("error_rate")
    if rate is not None and summary["requests"] >= 20 and rate >= thresholds.error_rate:
        found.append((
            "error_rate",
            f"error rate {rate:.1%} >= {thresholds.error_rate:.1%} over {summary['requests']} requests",
            {"error_rate": rate, "requests": summary["requests"], "errors": summary["errors"]},
        ))  # fmt: skip
    return found


def new_alerts(
    model: str,
    version: int,
    window_start: datetime,
    window_end: datetime,
    summary: dict[str, Any],
    thresholds: Thresholds,
    earlier: list[dict[str, Any]],
    cooldown: timedelta,
) -> list[dict[str, Any]]:
    """Alert rows for a window that just became final; ``earlier``: the alerts already recorded."""
    rows = []
    for kind, message, detail in findings(summary, thresholds):
        started = [a for a in earlier if a["model"] == model and a["state"] != "suppressed"]
        last = max((a["window_start"] for a in started), default=None)
        cooling = last is not None and timedelta(0) <= window_start - last < cooldown
        row = {
            "alert_id": f"{model}/{version}/{int(window_start.timestamp() * 1000)}/{kind}",
            "model": model,
            "version": version,
            "window_start": window_start,
            "kind": kind,
            "message": message,
            "detail": json.dumps({**detail, "window_end": window_end.isoformat()}),
            "state": "suppressed" if cooling else "pending",
            "event_id": None,
            "dag_run_id": None,
            "created_at": datetime.now(UTC),
            "posted_at": None,
        }
        rows.append(row)
        earlier = [*earlier, row]
    return rows


def event_extra(alert: dict[str, Any]) -> dict[str, Any]:
    """What the asset event carries to the retraining run (its ``cause`` task records it)."""
    detail = alert["detail"] if isinstance(alert["detail"], dict) else json.loads(alert["detail"])
    return {
        "alert_id": alert["alert_id"],
        "kind": alert["kind"],
        "model": alert["model"],
        "model_version": alert["version"],
        "window_start": alert["window_start"].isoformat(),
        "window_end": detail["window_end"],
        "message": alert["message"],
        "scores": detail,
    }


def undelivered(alert: dict[str, Any]) -> bool:
    """Whether an alert still waits to be posted, or for the run its event started."""
    return alert["state"] == "pending" or (alert["state"] == "posted" and not alert["dag_run_id"])


def record_new(store: Any, part: str, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store the alerts of ``found`` that table ``part`` does not hold yet (a rerun finds the same
    ids and adds nothing); those new ones."""
    from jobs.monitor.store import ALERT_SCHEMA

    known = {a["alert_id"] for a in store.alerts_of(part)}
    fresh = [a for a in found if a["alert_id"] not in known]
    store.upsert(part, fresh, ("alert_id",), ALERT_SCHEMA)
    return fresh


def deliver_stored(store: Any, part: str, asset_uri: str) -> None:
    """Post table ``part``'s undelivered alerts on ``asset_uri`` and record what changed."""
    from jobs.monitor.store import ALERT_SCHEMA

    changed = AirflowNotifier(asset_uri).deliver(store.alerts_of(part))
    store.upsert(part, changed, ("alert_id",), ALERT_SCHEMA)


class AirflowNotifier:
    """Posts pending alerts as asset events and finds the runs they started."""

    def __init__(self, asset_uri: str) -> None:
        self.asset_uri = asset_uri
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            from fjord.airflow.client import AirflowClient

            self._client = AirflowClient.connect()
        return self._client

    def deliver(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Post the pending alerts, resolve the runs of posted ones; the rows that changed."""
        from fjord.errors import FjordError

        todo = [a for a in alerts if undelivered(a)]
        if not todo:
            return []
        changed = []
        try:
            client = self._connect()
            # Every event since the oldest waiting alert was raised (a minute's slack for clocks),
            # however many other events came since: not only the latest 100.
            since = min(a["created_at"] for a in todo) - timedelta(minutes=1)
            events = client.asset_events(self.asset_uri, since=since)
            by_alert = {(e.get("extra") or {}).get("alert_id"): e for e in events}
            for alert in todo:
                event = by_alert.get(alert["alert_id"])
                if event is None and alert["state"] == "pending":
                    event = client.post_asset_event(self.asset_uri, event_extra(alert))
                    log.warning("alert %s: %s -> event %s on %s", alert["alert_id"], alert["message"],
                                event.get("id"), self.asset_uri)  # fmt: skip
                if event is None:
                    continue
                runs = [r.get("run_id") for r in event.get("created_dagruns") or []]
                update = {**alert, "state": "posted", "event_id": int(event["id"]),
                          "dag_run_id": runs[0] if runs else None,
                          "posted_at": alert["posted_at"] or datetime.now(UTC)}  # fmt: skip
                if update != alert:
                    changed.append(update)
        except (FjordError, OSError) as exc:
            self._client = None
            log.warning(
                "alerts: Airflow unavailable (%s); %d alert(s) wait for the next batch", exc, len(todo)
            )
        return changed
