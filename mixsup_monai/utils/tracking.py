"""MLflow tracking location: a SQLite store plus an artifact folder under ``mlruns/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sqlite_tracking_uri", "artifact_location"]

DB_NAME = "mlflow.db"


def sqlite_tracking_uri(mlruns_dir: str | Path = "mlruns") -> str:
    """The tracking URI of the SQLite store in ``mlruns_dir``.

    MLflow 3 refuses ``file:./mlruns`` unless told otherwise, and MONAI's ``MLFlowHandler`` needs a
    database (or HTTP) store; ``mlflow ui --backend-store-uri <this uri>`` shows the runs. Writes nothing
    (bundle configs call it when they are resolved): the bundles' ``initialize`` creates ``mlruns_dir``,
    which SQLite needs before MLflow opens the store.
    """
    path = Path(mlruns_dir).expanduser().resolve()
    return f"sqlite:///{path / DB_NAME}"


def artifact_location(mlruns_dir: str | Path = "mlruns") -> str:
    """The folder (as a ``file://`` URI) where runs of new experiments store their artifacts (MLflow creates it)."""
    return (Path(mlruns_dir).expanduser().resolve() / "artifacts").as_uri()
