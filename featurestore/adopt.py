"""Adopting feature group tables that the metadata database does not know.

The registry is an index of what the tables hold; the tables are the published data. Each table keeps
enough to rebuild its index: a descriptor written when the group was created (``_fjord_group.json``:
name, version, key, event time, online flag, description) and, in every Delta commit a publish made,
the commit's rows, statistics and publish id (``fjord.commit``, ``fjord.publish_id``).

Adoption is for a metadata database that lost its records of tables it never made: a new SQLite file
or a PostgreSQL database pointed at an old storage root, a restored older ``fjord.db``, two homes on
one root. A publish into such a table stops with :class:`~featurestore.errors.UnknownCommitsError`
instead of guessing; ``fjord featurestore adopt <project>`` (:func:`adopt`) rebuilds the records:

- a group the registry does not know is registered from its descriptor;
- its commits, and a known group's commits after its last registered one, are registered from the
  Delta log: every commit a publish made, minus those a later restore undid. The newest commit is
  adopted only if its publish passed its commit point (its run file says so: the publish is whole in
  every group it wrote); otherwise it is reverted, as its own writer's database would have done.

Adoption holds each group's writer lease, and changes nothing in a table it cannot read. The old
database's writers must be stopped first: two databases do not share leases.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from featurestore.errors import FeatureStoreError
from featurestore.feature_group import FeatureGroup
from featurestore.lease import WriterLeases
from featurestore.offline import DESCRIPTOR, DeltaOfflineStore
from featurestore.publish import replay_online
from featurestore.registry import CommitRecord, GroupRecord
from featurestore.schema import features_of
from fjord.errors import NotFoundError
from fjord.lineage import RUNS_DIR, RunRecord, get_run, index_run, lineage_engine

if TYPE_CHECKING:
    from featurestore.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class Adopted:
    """What adoption registered: commits per group (``project.name_version``), and reverted commits."""

    groups: list[str] = field(default_factory=list)
    commits: dict[str, list[int]] = field(default_factory=dict)
    reverted: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.commits:
            return "nothing to adopt: the registry knows every table and commit"
        parts = []
        for ref, ids in self.commits.items():
            new = " (new group)" if ref in self.groups else ""
            undone = f", reverted unfinished {self.reverted[ref]}" if self.reverted.get(ref) else ""
            parts.append(f"{ref}{new}: commits {ids}{undone}")
        return "adopted " + "; ".join(parts)


def adopt(store: FeatureStore) -> Adopted:
    """Register the project's tables and commits that the registry does not know (module doc)."""
    fs = store.project.fs.sub("FeatureStore")
    registry = store.registry
    result = Adopted()
    tables = sorted(d for d in (fs.listdir("") if fs.exists("") else []) if fs.exists(f"{d}/_delta_log"))
    for directory in tables:
        known = next(
            (g for g in registry.list_groups(store.project.name) if g.table_uri == fs.uri(directory)), None
        )
        if known is None:
            if not fs.exists(f"{directory}/{DESCRIPTOR}"):
                raise FeatureStoreError(
                    f"{fs.uri(directory)} has no {DESCRIPTOR}: it was not created by this version of "
                    "Fjord, so its key and event time are unknown; nothing was adopted",
                    hint="create the group with get_or_create_feature_group in the database that made it",
                )
            known = _register_group(store, directory, json.loads(fs.read_text(f"{directory}/{DESCRIPTOR}")))
            result.groups.append(_ref(known))
        _adopt_commits(store, known, result)
    return result


def _register_group(store: FeatureStore, directory: str, descriptor: dict[str, Any]) -> GroupRecord:
    record = GroupRecord(
        project=store.project.name,
        name=descriptor["name"],
        version=int(descriptor["version"]),
        description=descriptor.get("description", ""),
        primary_key=list(descriptor["primary_key"]),
        event_time=descriptor["event_time"],
        online_enabled=bool(descriptor["online_enabled"]),
        table_uri=store.project.fs.uri(f"FeatureStore/{directory}"),
        created_at=datetime.fromisoformat(descriptor["created_at"]),
    )
    stored, _ = store.registry.get_or_create_group(record)
    return stored


def _ref(record: GroupRecord) -> str:
    return f"{record.project}.{record.name}_{record.version}"


def _live(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commits that hold data, oldest first: every data commit, minus those a restore undid."""
    live: list[dict[str, Any]] = []
    for entry in entries:
        if "fjord.restored_to" in entry:
            to = entry["fjord.restored_to"]
            live = [] if to == "None" else [e for e in live if e["version"] <= int(to)]
        elif not str(entry.get("operation", "")).startswith("VACUUM"):
            live.append(entry)
    return live


def _finished(store: FeatureStore, entry: dict[str, Any]) -> bool:
    """Whether the publish that made the table's newest commit passed its commit point. A publish
    writes its run file (``Logs/runs/<run id>.json``, succeeded) once all of its groups' Delta commits
    are made, right before it registers them: with the file, the publish is whole. A compaction is
    one commit of one group, whole by itself; a commit without Fjord's metadata came from another
    writer, and is kept as it is."""
    run_id = entry.get("fjord.run_id")
    if "fjord.compaction_of" in entry or not run_id:
        return True
    rel = f"{RUNS_DIR}/{run_id}.json"
    fs = store.project.fs
    return fs.exists(rel) and json.loads(fs.read_text(rel)).get("status") == "succeeded"


def _adopt_commits(store: FeatureStore, group: GroupRecord, result: Adopted) -> None:
    registry = store.registry
    table = DeltaOfflineStore(group.table_uri)
    leases = WriterLeases(registry.engine)
    leases.acquire(group.id or 0, _ref(group))
    try:
        registered = {c.commit_id for c in registry.commits(group.id or 0)}
        live = _live(DeltaOfflineStore(group.table_uri).entries_since(None))
        new = [e for e in live if e["version"] not in registered]
        # Only the newest commit can be a publish's that never finished: a later writer reverts an
        # unfinished commit before it commits (featurestore.publish).
        if new and new[-1] is live[-1] and not _finished(store, live[-1]):
            before = live[-2]["version"] if len(live) > 1 else None
            table.revert_to(before, {"fjord.restored_to": str(before)})
            result.reverted[_ref(group)] = [live[-1]["version"]]
            new = new[:-1]
        if not new:
            return
        schema = table.snapshot(new[-1]["version"]).schema
        records = [_commit_record(e, group.online_enabled) for e in new]
        with registry.engine.begin() as conn:
            for record in records:
                registry.add_commit(conn, group.id or 0, record)
            registry.set_features(
                group.id or 0, features_of(schema, group.primary_key, group.event_time), conn
            )
        result.commits[_ref(group)] = [r.commit_id for r in records]
        _index_runs(store, {r.run_id for r in records if r.run_id})
        feature_group = FeatureGroup(store, group)
        for commit in registry.online_pending(group.id or 0):
            replay_online(feature_group, table, commit)
        log.info("%s: adopted commits %s", _ref(group), [r.commit_id for r in records])
    finally:
        leases.release()


def _index_runs(store: FeatureStore, run_ids: set[str]) -> None:
    """The lineage of adopted commits: their publishes' run files, indexed where this database lacks them."""
    fs = store.project.fs
    for run_id in sorted(run_ids):
        rel = f"{RUNS_DIR}/{run_id}.json"
        try:
            get_run(run_id)
            continue
        except NotFoundError:
            pass
        if fs.exists(rel):
            with lineage_engine().begin() as conn:
                index_run(conn, store.project, RunRecord.model_validate_json(fs.read_text(rel)))


def _commit_record(entry: dict[str, Any], online: bool) -> CommitRecord:
    own = json.loads(entry.get("fjord.commit") or "{}")
    metrics = entry.get("operationMetrics") or {}
    rows = int(own.get("rows", metrics.get("num_added_rows", 0)) or 0)
    updated = own.get("rows_updated")
    return CommitRecord(
        commit_id=int(entry["version"]),
        committed_at=datetime.fromtimestamp(int(entry["timestamp"]) / 1000, UTC),
        rows=rows,
        rows_inserted=None if updated is None else rows - int(updated),
        rows_updated=updated,
        run_id=entry.get("fjord.run_id") or None,
        statistics=own.get("statistics") or {},
        publish_id=entry.get("fjord.publish_id"),
        stage=own.get("stage"),
        online_pending=online,  # the next step writes its rows to the online store
    )
