"""The reproduction runner behind ``benchmarks/reproduce_*.py``: train each method of a bundle over seeds, test it,
keep one results table that a later call resumes.

A reproduction script declares its bundle, its methods (the config files each adds to ``train.json``), its
metrics and its method-specific steps (``run_one(reproduction, method, seed) -> record``, ``table(records)``);
this module holds the rest::

    template = Reproduction(bundle, config_methods("mixed", "pixel_level"), out, defaults={"resume": True})


    def main(argv=None):
        return reproduce(argv, template, run_one, table, "Reproduce the comparison")

A script with another command line (LSR's) composes ``reproduction_parser``, ``run_missing`` and
``write_report`` itself.

Every run lives in its own folder ``<out>/runs_<config tag>/<method>/seed_<seed>`` (the tag hashes the datalist
and the overrides), so a resumed run never continues a run of another configuration, and every record of
``results.json`` names its configuration (``config``), so a table only counts the runs made with the same one.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import logging
import math
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mixsup_monai.utils.bundle import run_bundle, run_dirs
from mixsup_monai.utils.io import write_json_atomic

__all__ = [
    "Reproduction",
    "ResultsFile",
    "config_key",
    "config_methods",
    "group_rows",
    "markdown_table",
    "mean_std",
    "mean_std_cells",
    "parse_override",
    "reproduce",
    "reproduction_parser",
    "round_run_cells",
    "run_folder",
    "run_missing",
    "summary_rows",
    "write_report",
]


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` of ``--override`` as ``(key, value)``; the value is a Python literal when it reads as one.

    Raises:
        argparse.ArgumentTypeError: ``text`` has no ``=``.
    """
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--override expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def reproduction_parser(
    description: str,
    out: Path,
    methods: Sequence[str] | None = None,
    default_methods: Sequence[str] | None = None,
    out_option: str = "--out",
) -> argparse.ArgumentParser:
    """The command line every reproduction script shares: ``--datalist --seeds [--methods] --out --override``.

    Args:
        description: the ``--help`` text (kept as written).
        out: default of ``out_option``, the folder of the runs and the tables.
        methods: the choices of ``--methods``; None: the script has no ``--methods`` (it adds its own selection).
        default_methods: the methods run when ``--methods`` is not given (default: all).
        out_option: the option's name (its value is always ``args.out``).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", default=None, help="datalist of the contract (default: the bundle's demo cohort)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    if methods is not None:
        parser.add_argument("--methods", nargs="+", default=list(default_methods or methods), choices=list(methods))
    parser.add_argument(
        out_option, dest="out", metavar=out_option.lstrip("-").upper(), type=Path, default=out, help="runs and tables"
    )
    parser.add_argument(
        "--override", type=parse_override, action="append", default=[], help="config override key=value (repeatable)"
    )
    return parser


def config_key(datalist: str | None, overrides: Mapping[str, Any]) -> str:
    """The configuration of a run as a string, recorded in ``results.json`` (``config``) and hashed into run folders."""
    return json.dumps({"datalist": datalist, "overrides": dict(overrides)}, sort_keys=True, default=str)


def config_methods(main: str, *others: str) -> dict[str, list[str]]:
    """Methods named after their config files: ``main`` is ``train.json`` alone, each other ``X`` adds ``X.json``."""
    return {main: [], **{name: [f"{name}.json"] for name in others}}


def run_folder(out: Path, method: str, seed: int, key: str) -> Path:
    """``out/runs_<tag>/<method>/seed_<seed>``, ``tag`` a hash of the configuration ``key`` (see ``config_key``).

    Characters other than letters, digits and ``.+=-`` in ``method`` become ``_`` (LSR names its variants in prose).
    """
    tag = hashlib.sha1(key.encode()).hexdigest()[:8]
    return Path(out) / f"runs_{tag}" / re.sub(r"[^\w.+=-]+", "_", method) / f"seed_{seed}"


def read_metrics(path: Path) -> dict[str, float]:
    """Metrics an evaluation wrote: a JSON object, or the ``name,value`` rows of MONAI's ``MetricsSaver`` CSV."""
    path = Path(path)
    if path.suffix == ".csv":
        with open(path) as f:
            return {row[0]: float(row[1]) for row in csv.reader(f) if len(row) >= 2}
    return json.loads(path.read_text())


@dataclass
class Reproduction:
    """Runs of one bundle: each method trained with ``train.json`` plus its config files, under its own folder.

    Args:
        bundle: the bundle folder (holding ``configs/``).
        methods: method name -> config files (in ``configs/``) added after ``train.json``.
        out: folder of the runs (``run_folder``), of MLflow's runs (unless ``mlflow_dir``) and of the tables.
        datalist: the datalist of every run; None: the bundle's default (the demo cohort).
        overrides: config overrides of every run; part of the configuration ``key``.
        defaults: config overrides of every run that are not part of ``key`` (the script's fixed settings).
        metrics_file: the file an evaluation writes its metrics to, inside its output folder.
        mlflow_dir: MLflow's folder (default ``out/mlruns``).
    """

    bundle: Path
    methods: Mapping[str, Sequence[str]]
    out: Path
    datalist: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    metrics_file: str = "test_metrics.json"
    mlflow_dir: Path | None = None

    @property
    def key(self) -> str:
        """The configuration of these runs (``config`` of their records)."""
        return config_key(self.datalist, self.overrides)

    def folder(self, method: str, seed: int) -> Path:
        """The work folder of one run: ``models/`` (checkpoints, ``rounds.json``) and ``eval/`` (outputs)."""
        return run_folder(self.out, method, seed, self.key)

    def files(self, method: str) -> list[str]:
        """Config files of ``method``'s training, in ``configs/``."""
        return ["train.json", *self.methods[method]]

    def settings(self, method: str, seed: int) -> dict[str, Any]:
        """Config overrides of one run: its folders, ``seed``, ``defaults`` and ``overrides`` (later ones win).

        A script whose methods need other settings (say, a matched training length) overrides this method.
        """
        mlflow_dir = self.mlflow_dir if self.mlflow_dir is not None else Path(self.out) / "mlruns"
        dirs = run_dirs(self.bundle, self.folder(method, seed), mlflow_dir, self.datalist)
        return {**dirs, "seed": seed, **self.defaults, **self.overrides}

    def workflow(self, method: str, seed: int, workflow_type: str, extra_files: Sequence[str] = (), **overrides):
        """Run ``method``'s configs (plus ``extra_files``) as a ``workflow_type`` workflow with the run's settings."""
        files = [*self.files(method), *extra_files]
        settings = {**self.settings(method, seed), **overrides}
        return run_bundle(self.bundle, files, workflow_type, check_properties=False, **settings)

    def train(self, method: str, seed: int) -> None:
        """Train ``method`` with ``seed`` (the bundle decides whether it resumes)."""
        self.workflow(method, seed, "train")

    def evaluate(
        self, method: str, seed: int, checkpoint: Path | None = None, eval_dir: Path | None = None
    ) -> dict[str, float]:
        """Test metrics of a checkpoint, measured by the bundle's ``evaluate.json``.

        Args:
            checkpoint: a round checkpoint, holding every trained entry (``ckpt_path`` and, for MixSup's
                stage-2 classifier, ``classifier_path``); None: the config's (the exported files).
            eval_dir: the evaluation's output folder (``eval_dir``); None: the config's, the run's ``eval/``.
        """
        extra = {} if checkpoint is None else {"ckpt_path": str(checkpoint), "classifier_path": str(checkpoint)}
        if eval_dir is not None:
            extra["eval_dir"] = str(eval_dir)
        self.workflow(method, seed, "eval", ["evaluate.json"], **extra)
        return read_metrics(Path(eval_dir or self.folder(method, seed) / "eval") / self.metrics_file)

    def train_rounds(self, method: str, seed: int, metrics: Sequence[str]) -> tuple[dict, list[dict]]:
        """Train ``method`` (a bundle trained in rounds) and test the round it exported.

        Returns:
            the record ``{"method", "seed", *metrics, "selected_round", "rounds"}`` (test metrics of
            ``models/model.pt``, measured into ``eval/test``) and the run's round records.
        """
        self.train(method, seed)
        work = self.folder(method, seed)
        records = self.round_records(method, seed)
        tested = self.evaluate(method, seed, None, work / "eval" / "test")
        result = {
            "method": method,
            "seed": seed,
            **{k: float(tested[k]) for k in metrics},
            "selected_round": self.exported_round(method, seed),
            "rounds": len(records),
        }
        return result, records

    def round_records(self, method: str, seed: int) -> list[dict]:
        """The round records of a trained run (``models/rounds.json`` of the bundles trained in rounds)."""
        return json.loads((self.folder(method, seed) / "models" / "rounds.json").read_text())["rounds"]

    def exported_round(self, method: str, seed: int) -> int:
        """The round the bundle selected and exported as ``models/model.pt``."""
        # written by mixsup_monai.handlers.RoundSelection beside the exported files
        selection = self.folder(method, seed) / "models" / "selection.json"
        return int(json.loads(selection.read_text())["round"])

    def evaluate_round(
        self, method: str, seed: int, index: int, measured: Mapping[int, dict] | None = None
    ) -> dict[str, float]:
        """Test metrics of round ``index``'s checkpoint, in ``eval/test_round_<index>``.

        Args:
            measured: metrics already measured, by round (the exported model's): returned instead of
                evaluating the same weights again.
        """
        if measured and index in measured:
            return dict(measured[index])
        work = self.folder(method, seed)
        checkpoint = work / "models" / "rounds" / f"round_{index:02d}.pt"
        return self.evaluate(method, seed, checkpoint, work / "eval" / f"test_round_{index:02d}")

    def default_datalist(self) -> str:
        """The datalist the runs read, made first if it is missing (the bundle's demo cohort).

        For a step that reads the datalist itself before any training: ``datalist`` when given, else the
        path ``train.json`` defaults to, after its ``initialize`` step (which makes the demo when it is missing).
        """
        if self.datalist is not None:
            return str(self.datalist)
        from monai.bundle import ConfigWorkflow

        configs = Path(self.bundle) / "configs"
        with tempfile.TemporaryDirectory() as tmp:  # the initialize step's folders, not a run's
            workflow = ConfigWorkflow(
                config_file=str(configs / "train.json"),
                meta_file=str(configs / "metadata.json"),
                logging_file=str(configs / "logging.conf"),
                workflow_type="train",
                **{**run_dirs(self.bundle, tmp), **self.defaults, **self.overrides},
            )
            workflow.initialize()
            return str(workflow.parser.get_parsed_content("datalist"))


@dataclass(frozen=True)
class ResultsFile:
    """``results.json`` of a reproduction: its records, one per method and seed (and configuration).

    Args:
        path: the file.
        name_field: the record field naming the method (``method``; LSR: ``variant``).
        group_by: None: the file is a list of records; else it is an object of lists, ``group_by(record)`` its key.
        legacy_key: the configuration of records without ``config`` (written before scripts recorded it).
    """

    path: Path
    name_field: str = "method"
    group_by: Callable[[dict], str] | None = None
    legacy_key: str | None = None

    def load(self) -> list[dict]:
        """The records, in the file's order (none if there is no file)."""
        if not Path(self.path).is_file():
            return []
        data = json.loads(Path(self.path).read_text())
        records = [r for rows in data.values() for r in rows] if isinstance(data, dict) else data
        if self.legacy_key is not None:
            records = [r if "config" in r else {**r, "config": self.legacy_key} for r in records]
        return records

    def save(self, records: list[dict]) -> None:
        """Write ``records`` atomically (an interrupted reproduction leaves the last complete table)."""
        data: Any = records
        if self.group_by is not None:
            data = {}
            for record in records:
                data.setdefault(self.group_by(record), []).append(record)
        write_json_atomic(self.path, data)


def run_missing(
    runs: Iterable[tuple[str, int]],
    run: Callable[[str, int], dict],
    results: ResultsFile | Path,
    key: str,
    upgrade: tuple[str, Callable[[dict], dict]] | None = None,
    force: bool = False,
) -> list[dict]:
    """Run ``run(method, seed)`` for each pair of ``runs`` not in ``results`` with config ``key``, saving after each.

    A record is ``{name_field: method, "seed": seed, "config": key, **run(method, seed)}``.

    Args:
        runs: ``(method, seed)`` pairs in the order to run them (seed-major: an interrupted reproduction
            still has every method at the first seeds).
        results: the table (a path: a list of records with a ``method`` field).
        upgrade: optional ``(field, fn)``: records of ``key`` written by an older version of a script (without
            ``field``) are replaced by ``fn(record)`` and saved, so that old runs are not retrained.
        force: run the pairs of ``runs`` again, replacing their records.

    Returns:
        the records of config ``key`` (runs of another datalist / overrides do not count).
    """
    results = results if isinstance(results, ResultsFile) else ResultsFile(Path(results))
    name = results.name_field
    runs = list(runs)
    records = results.load()
    if force:
        redo = set(runs)
        records = [r for r in records if r.get("config") != key or (r[name], r["seed"]) not in redo]
    done = {(r[name], r["seed"]) for r in records if r.get("config") == key}
    for method, seed in runs:
        if (method, seed) in done:
            print(f"{method} seed {seed}: already in {results.path}, skipped", file=sys.stderr)
            continue
        print(f"{method} seed {seed} ...", file=sys.stderr)
        records.append({name: method, "seed": seed, "config": key, **run(method, seed)})
        done.add((method, seed))
        results.save(records)
    if upgrade is not None:
        missing_field, fn = upgrade
        for i, record in enumerate(records):
            if record.get("config") == key and missing_field not in record:
                records[i] = fn(record)
                results.save(records)
    return [r for r in records if r.get("config") == key]


def group_rows(records: Iterable[dict], names: Iterable[str], name_field: str = "method") -> dict[str, list[dict]]:
    """The records of each of ``names`` (in that order; names without records left out)."""
    records = list(records)
    groups = {name: [r for r in records if r[name_field] == name] for name in names}
    return {name: rows for name, rows in groups.items() if rows}


def mean_std(values: Iterable[float], digits: int = 3, always_spread: bool = False) -> str:
    """``mean ± sample std`` of ``values`` (NaNs left out); one value alone, ``n/a`` for none.

    Args:
        always_spread: write ``± 0.000`` after a single value too (LSR's tables).
    """
    values = [float(v) for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1 and not always_spread:
        return f"{values[0]:.{digits}f}"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def mean_std_cells(rows: Sequence[dict], keys: Iterable[str], **kwargs) -> list[str]:
    """``mean_std`` of each of ``keys`` over ``rows`` (``kwargs`` go to ``mean_std``)."""
    return [mean_std((r[k] for r in rows), **kwargs) for k in keys]


def summary_rows(
    results: Iterable[dict], names: Iterable[str], metrics: Sequence[str], selections: Sequence[tuple[str, str]] = ()
) -> list[list]:
    """Summary rows of a bundle trained in rounds: ``[method, *mean ± std of metrics, seeds]``, over seeds.

    Args:
        names: the methods, in table order (those without records are left out).
        selections: ``(suffix, label)`` of other round selections, tabulated (from ``<metric>_<suffix>``) as a
            row ``"<method>, <label>"`` under their method when one of its runs had more than one round.
    """
    rows = []
    for method, runs in group_rows(results, names).items():
        rows.append([method, *mean_std_cells(runs, metrics), len(runs)])
        for suffix, label in selections if any(r["rounds"] > 1 for r in runs) else ():
            rows.append([f"{method}, {label}", *mean_std_cells(runs, [f"{k}_{suffix}" for k in metrics]), len(runs)])
    return rows


def round_run_cells(record: dict, metrics: Sequence[str]) -> list:
    """The first cells of a run's row (bundles trained in rounds): method, seed, metrics, the exported round."""
    cells = [record["method"], record["seed"], *(f"{record[k]:.3f}" for k in metrics)]
    return [*cells, f"{record['selected_round']} of 0-{record['rounds'] - 1}"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: Collection[int] = ()) -> list[str]:
    """The lines of a markdown table; the columns numbered in ``right`` are right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_report(out: Path, text: str) -> Path:
    """Write ``text`` to ``out/results.md`` and print it."""
    path = Path(out) / "results.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
    return path


def reproduce(
    argv: list[str] | None,
    template: Reproduction,
    run: Callable[[Reproduction, str, int], dict],
    table: Callable[[list[dict]], str],
    description: str,
    default_methods: Sequence[str] | None = None,
    upgrade: tuple[str, Callable[[Reproduction, dict], dict]] | None = None,
    requested_only: bool = False,
) -> int:
    """The ``main`` of a script whose methods are ``template``'s: parse the command line, run what the table lacks
    (methods x seeds, seed-major), write ``results.md``.

    Args:
        argv: the command line (None: ``sys.argv``); see ``reproduction_parser``.
        template: the bundle, methods and fixed settings; the command line sets ``out``, ``datalist``, ``overrides``.
        run: ``run(reproduction, method, seed)``, the record of one run (see ``run_missing``).
        table: the markdown of the records.
        description: the ``--help`` text.
        default_methods: the methods run without ``--methods`` (default: all).
        upgrade: ``(field, fn)`` of ``run_missing``, ``fn(reproduction, record)``.
        requested_only: tabulate the records of the requested methods and seeds only (else every record of the
            configuration run so far).

    Returns:
        0, the exit status.
    """
    args = reproduction_parser(description, template.out, list(template.methods), default_methods).parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    reproduction = replace(template, out=args.out, datalist=args.datalist, overrides=dict(args.override))
    results = run_missing(
        [(m, s) for s in args.seeds for m in args.methods],
        lambda m, s: run(reproduction, m, s),
        ResultsFile(args.out / "results.json"),
        reproduction.key,
        upgrade=None if upgrade is None else (upgrade[0], lambda record: upgrade[1](reproduction, record)),
    )
    if requested_only:
        results = [r for r in results if r["method"] in args.methods and r["seed"] in args.seeds]
    write_report(args.out, table(results))
    return 0
