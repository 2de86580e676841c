"""The lease renewal thread outlives a database that went away: it logs and tries again."""

from __future__ import annotations

import logging

from sqlalchemy import create_engine

from featurestore.lease import WriterLeases
from tests.waiting import wait_for


def test_renewal_survives_a_database_error(tmp_path, caplog) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    leases = WriterLeases(engine, ttl=0.3, wait=0)
    leases.acquire(1, "fraud.tx_1")
    (tmp_path / "meta.db").unlink()  # the database is gone under the writer
    engine.dispose()
    (tmp_path / "meta.db").mkdir()  # and cannot be reopened
    with caplog.at_level(logging.WARNING, logger="featurestore.lease"):
        wait_for(lambda: "could not renew writer leases" in caplog.text, 30, "a failed renewal")
        failures = caplog.text.count("could not renew writer leases")
        wait_for(lambda: caplog.text.count("could not renew writer leases") > failures, 30, "a retry")
    assert leases._renewer is not None and leases._renewer.is_alive()
    leases._stop.set()
    leases._renewer.join()
