"""MLflow tracking location: a SQLite store plus an artifact folder under ``mlruns/``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sqlite_tracking_uri", "artifact_location"]

DB_NAME = "mlflow.db"


def sqlite_tracking_uri(mlruns_dir: str | Path = "mlruns") -> str:
    """The tracking URI of the SQLite store in ``mlruns_dir`` (created if missing).

    MLflow 3 refuses ``file:./mlruns`` unless told otherwise, and MONAI's ``MLFlowHandler`` needs a
    database (or HTTP) store; ``mlflow ui --backend-store-uri <this uri>`` shows the runs.
    """
    path = Path(mlruns_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / DB_NAME}"


def artifact_location(mlruns_dir: str | Path = "mlruns") -> str:
    """The folder (as a ``file://`` URI) where runs of new experiments store their artifacts."""
    path = Path(mlruns_dir).expanduser().resolve() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()
