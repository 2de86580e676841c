"""The lease renewal thread outlives a database that went away: it logs and tries again."""

from __future__ import annotations

import logging
import time

from sqlalchemy import create_engine

from featurestore.lease import WriterLeases


def test_renewal_survives_a_database_error(tmp_path, caplog) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    leases = WriterLeases(engine, ttl=0.3, wait=0)
    leases.acquire(1, "fraud.tx_1")
    (tmp_path / "meta.db").unlink()  # the database is gone under the writer
    engine.dispose()
    (tmp_path / "meta.db").mkdir()  # and cannot be reopened
    with caplog.at_level(logging.WARNING, logger="featurestore.lease"):
        time.sleep(0.5)
    assert leases._renewer is not None and leases._renewer.is_alive()
    assert "could not renew writer leases" in caplog.text
    leases._stop.set()
    leases._renewer.join()
