"""etlbench: a benchmark of filter-pruning methods for efficient transfer learning on face tasks.

commands:
  list      the registered backbones, tasks, datasets (with what a data root holds) or pruning methods
  transfer  train the transfer baseline of a task: the whole source network fine-tuned with a new head
  prune     one trial: prune to a budget, recover, evaluate and measure; prints its row
  run       an experiment (a preset or a YAML spec) on Ray into a results database; --resume goes on with it
  evaluate  score every stored model of a run on another dataset of the same task (cross-dataset evaluation)
  report    the leaderboard (Markdown, CSV, HTML) and figures of a results folder
  data      datasets: prepare (canonical npz from a dataset's usual distribution), verify (what a data root holds),
            download (where the terms allow a scripted download; else where to get the source)

Every error of the input is one line, "etlbench: error: ..." (exit 2; --debug or ETLBENCH_DEBUG=1 shows the
traceback). Each command imports only what it needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etlbench.checks import AT_LEAST_1, INPUT_SIZE, NON_NEGATIVE, Rule, check_compression, check_value, describe
from etlbench.errors import ConfigError, EtlbenchError, RunInterrupted
from etlbench.paths import data_root

KINDS = ("backbones", "datasets", "methods", "tasks")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"etlbench: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _number(kind: type, rule: Rule) -> Callable[[str], Any]:
    """An option's type: text read as ``kind`` (int or float) and checked by ``rule``, as a spec's values are."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {describe(kind)}, got {text!r}") from None
        try:
            check_value("value", value, kind, rule)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value: ")) from None
        return value

    return parse


def _compression(text: str) -> float | None:
    try:
        value = text if text == "auto" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio baseline/pruned (e.g. 4) or 'auto', got {text!r}") from None
    try:
        return check_compression(value)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(f"{err} (a ratio baseline/pruned)") from None


COUNT = _number(int, AT_LEAST_1)  # threads, workers, samples, epochs, steps, batch sizes
PIXELS = _number(int, INPUT_SIZE)


def _list(args: argparse.Namespace) -> dict[str, Any]:
    """Names and descriptions from the registries: the built-ins are declared there without importing them, so
    listing imports no torch (a third-party plugin's own module may)."""
    from etlbench import plugins
    from etlbench.errors import DatasetError
    from etlbench.registry import BACKBONES, DATASETS, METHODS, TASKS

    registry = {"backbones": BACKBONES, "tasks": TASKS, "datasets": DATASETS, "methods": METHODS}[args.kind]
    rows = {name: {"description": desc} for name, desc in registry.describe().items()}
    if args.kind == "tasks":
        for name, row in rows.items():
            builtin = plugins.TASKS.get(name)  # a built-in's metric is declared; another task describes itself
            if builtin is not None:
                row["metric"] = builtin.metric
            else:
                from etlbench.tasks import create_task

                row["metric"] = create_task(name).describe()
    if args.kind == "datasets":
        from etlbench.data.canonical import split_counts  # numpy only

        root = data_root(args.data_root)
        for name, row in rows.items():
            spec = DATASETS.get(name)
            if spec.relative_path is None:
                row["status"] = "generated on the fly (embedded default)"
                continue
            if root is None or not spec.path(root).is_file():
                row["status"] = "not found" + (f" (looked for {spec.path(root)})" if root else " (no data root set)")
                continue
            try:
                row["status"] = "found"
                row["splits"] = split_counts(spec.path(root))
            except DatasetError as err:
                row["status"] = f"invalid: {err}"
    return rows


def _print_list(rows: dict[str, Any]) -> None:
    width = max((len(n) for n in rows), default=0)
    for name, row in rows.items():
        extra = ""
        if "status" in row:
            extra = f" [{row['status']}" + (f": {row['splits']}" if "splits" in row else "") + "]"
        if "metric" in row:
            extra = f" [{row['metric']}]"
        print(f"{name:<{width}}  {row['description']}{extra}")


def _precision_option(p: argparse.ArgumentParser) -> None:  # TrainConfig checks the value (importing torch)
    p.add_argument("--precision", metavar="fp32|bf16",
                   help="train in fp32 or under bf16 autocast (default: the recipe's, bf16; a CPU without "
                        "AVX512-BF16 emulates bf16 about 17x slower)")


def _train_config(recipe: Any, **given: Any) -> Any:
    """``recipe`` (a TrainConfig) with the options given on the command line."""
    from dataclasses import replace

    return replace(recipe, **recipe.budget_fields({k: v for k, v in given.items() if v is not None}))


def _setting(args: argparse.Namespace, train: Any) -> Any:
    """The resolved transfer spec (setting) that ``transfer`` and ``prune`` share; bad data fails here."""
    from etlbench.backbones import DEFAULT_BACKBONE, check_backbone
    from etlbench.transfer import TransferSpec

    check_backbone(args.backbone or DEFAULT_BACKBONE, args.backbone_weights)  # its weights load, before the data
    return TransferSpec(task=args.task, backbone=args.backbone or DEFAULT_BACKBONE,
                        backbone_weights=args.backbone_weights, dataset=args.dataset, data_root=args.data_root,
                        input_size=args.input_size, max_train=args.max_train, seed=args.seed, train=train,
                        threads=args.threads).resolved()


def _transfer(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.train import use_threads
    from etlbench.transfer import TRANSFER, checkpoint_path, transfer_baseline

    spec = _setting(args, _train_config(TRANSFER, epochs=args.epochs, samples=args.samples,
                                        batch_size=args.batch_size, lr=args.lr, precision=args.precision))
    use_threads(spec.threads)
    cached = checkpoint_path(spec, args.out).is_file()
    row = transfer_baseline(spec, args.out)[1]
    return {**row, "checkpoint": str(checkpoint_path(spec, args.out)), "cached": cached}


def _print_transfer(row: dict[str, Any]) -> None:
    if row.get("note"):
        print(row["note"])
    arrow = "higher is better" if row["higher_is_better"] else "lower is better"
    print(f"transfer baseline: task {row['task']} on {row['dataset']} ({row['n_train']} train / {row['n_val']} val / "
          f"{row['n_test']} test), backbone {row['backbone']} at {row['input_size'][0]}x{row['input_size'][1]}, "
          f"seed {row['seed']}")
    print(f"  test {row['metric_name']}: {row['metric']:.4f} ({arrow}); all: "
          + ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items()))
    print(f"  frozen linear probe ({row['probe_cut']}): {row['metric_name']} {row['probe_metric']:.4f} "
          f"in {row['probe_seconds']:.1f} s (the head starts from it: linear probe, then fine-tune)")
    print(f"  params {row['params']:,}  size {row['size_bytes']:,} B  MACs {row['macs']:,}")
    print(f"  train {row['train_seconds']:.1f} s, {row['samples_seen']:,} samples, val chose the model after "
          f"{row['best_samples']:,} of them, {row['threads']} threads, {row['precision']}")
    print(f"  checkpoint: {row['checkpoint']}" + (" (read from the cache: trained before under the same identity)"
                                                   if row["cached"] else ""))


def _method_params(pairs: list[str]) -> dict[str, Any]:
    import yaml

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--param {pair!r}: {value!r} is not a YAML value ({type(err).__name__})") from err
    return params


def _prune(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.measure import MeasureConfig
    from etlbench.methods import create_method
    from etlbench.transfer import TRANSFER
    from etlbench.trial import RECOVERY, TrialSpec, run_trial, shared_stage

    params = _method_params(args.param)
    create_method(args.method, **params)  # a bad method or parameter fails first, before weights and data load
    spec = TrialSpec(setting=_setting(args, _train_config(TRANSFER, epochs=args.transfer_epochs,
                                                          samples=args.transfer_samples, precision=args.precision)),
                     method=args.method, compression=args.compression, method_params=params,
                     budget_of=args.budget_of,
                     recovery=_train_config(RECOVERY, epochs=args.recovery_epochs, samples=args.recovery_samples,
                                            max_steps=args.recovery_steps, precision=args.precision),
                     measure=MeasureConfig(threads=args.threads))
    spec.configure()  # a bad method parameter or budget fails now, before any training
    data = spec.setting.load_data()
    shared_stage(spec, args.cache, data)  # as `etlbench run` does: e.g. ETL's probes cached, not in prune_seconds
    return run_trial(spec, args.cache, data)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.config import load_spec
    from etlbench.runner.execute import run_experiment

    preset = args.preset
    if preset is None and args.config is None:  # the main job: smoke on the embedded default, quick on real data
        preset = "quick" if data_root(args.data_root) is not None else "smoke"
        print(f"etlbench run: no --preset or --config given: running preset {preset!r} "
              f"({'real data under ' + str(data_root(args.data_root)) if preset == 'quick' else 'no data root set'})",
              file=sys.stderr)
    spec = load_spec(preset, args.config, data_root=args.data_root, backbone=args.backbone)
    summary = run_experiment(spec, args.out, resume=args.resume, address=args.address, workers=args.workers,
                             only="train" if args.train_only else "measure" if args.measure_only else None,
                             show_progress=not args.no_progress)
    return dataclasses.asdict(summary)


def _print_run(summary: dict[str, Any]) -> None:
    from etlbench.runner.execute import RunSummary, run_summary_lines

    print("\n".join(run_summary_lines(RunSummary(**summary))))


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.evaluate import evaluate_run

    summary = evaluate_run(args.dir, args.dataset, task=args.task, data_root=args.data_root,
                           again=not args.skip_scored, log=lambda line: print(line, file=sys.stderr))
    if not args.no_report:
        from etlbench.report import write_report

        summary["report"] = write_report(args.dir)["written"]
    return summary


def _print_evaluate(summary: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in summary["evaluated"].items())
    print(f"evaluated on {summary['dataset']} (fingerprint {summary['fingerprint']}): {counts} in "
          f"{summary['seconds']:.1f} s")
    for task, reason in summary["skipped"].items():
        print(f"  skipped {task}: {reason}")
    if summary.get("report"):
        print(f"report rewritten: {len(summary['report'])} files")


def _report(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.report import write_report

    return write_report(args.dir, figures=True, tables=not args.figures_only, formats=tuple(args.format),
                        code_version=args.code_version, backbone=args.backbone, experiment=args.experiment)


def _print_report(result: dict[str, Any]) -> None:
    print(f"sections: {', '.join(' on '.join(s) for s in result['sections'])}")
    for note in result["left_out"]:
        print(f"left out: {note}")
    print(f"wrote {len(result['written'])} files in {result['seconds']:.1f} s:")
    print("\n".join(f"  {f}" for f in result["written"]))


def _print_row(row: dict[str, Any]) -> None:
    skip = {"traceback", "metrics"}
    for key, value in row.items():
        if key not in skip:
            print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    if row.get("traceback"):
        print(row["traceback"], file=sys.stderr)


def _numbers(kind: type, count: int | None = None) -> Callable[[str], tuple]:
    """An option's type: comma-separated numbers (``count`` of them, where given)."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            words = "whole numbers" if kind is int else "numbers"
            raise argparse.ArgumentTypeError(f"expected comma-separated {words}, got {text!r}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated values, got {text!r}")
        return values

    return parse


def _subsample(text: str) -> int | str:
    return "all" if text == "all" else COUNT(text)


#: ``data prepare``'s options that set a converter parameter of the same name.
_PREPARE_OPTIONS = ("size", "color", "seed", "subsample", "split", "crop", "pairs", "label_key", "classes")


def _data_prepare(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.prepare import prepare

    params = _method_params(args.param)
    params.update({k: getattr(args, k) for k in _PREPARE_OPTIONS if getattr(args, k) is not None})
    if params.get("subsample") == "all":
        params["subsample"] = None
    if params.get("split") == "none":
        params["split"] = None
    return prepare(args.name, args.src, args.dst, params, output_name=args.dataset_name).as_dict()


def _print_prepared(result: dict[str, Any]) -> None:
    print(f"wrote {result['path']} ({result['dataset']} from {result['source']}, {result['seconds']:.1f} s)")
    print("  " + ", ".join(f"{k} {v:,}" for k, v in result["counts"].items()))
    print(f"  fingerprint {result['fingerprint']}  sha256 {result['sha256']}")
    shown = {k: ",".join(map(str, v)) if isinstance(v, tuple | list) else "none" if v is None else v
             for k, v in result["parameters"].items()}
    print("  parameters: " + " ".join(f"{k}={v}" for k, v in shown.items()))
    if result["replaced"]:
        print(f"  replaced a file of fingerprint {result['replaced']}")
    if result["skipped"]:
        print(f"  skipped {len(result['skipped'])}:")
        print("\n".join(f"    {s}" for s in result["skipped"]))
    for note in result["notes"]:
        print(f"  note: {note}")


def _data_verify(args: argparse.Namespace) -> dict[str, Any]:
    """Prints each file's report as it is made; any invalid file makes the command fail (one line, exit 2)."""
    from etlbench.errors import DatasetError
    from etlbench.prepare.verify import files_under, verify_file

    files = files_under(Path(args.target))
    if not files:
        raise DatasetError(f"{args.target}: holds no .npz file")
    invalid = []
    for path in files:
        report = verify_file(path)
        print(f"{path}: {report.dataset or 'not a registered dataset'}: {'INVALID' if report.problems else 'valid'}")
        print("\n".join(f"  {line}" for line in report.lines + [f"INVALID: {p}" for p in report.problems]))
        if report.problems:
            invalid.append(str(path))
    if invalid:
        raise DatasetError(f"{len(invalid)} of {len(files)} dataset files are invalid: {', '.join(invalid)}")
    return {"files": len(files)}


def _data_download(args: argparse.Namespace) -> dict[str, Any]:
    from etlbench.prepare.download import download
    from etlbench.registry import DATASETS

    return download(DATASETS.get(args.name), Path(args.dst), args.variant)


def _print_download(result: dict[str, Any]) -> None:
    for path in result["files"]:
        print(f"downloaded {path}")
    if not result["files"]:
        print(f"{result['dataset']}: no scripted download. Get {result['instructions']}.")
    print(f"next: {result['next']}")


def _add_data(sub: Any) -> None:
    """The ``data`` command and its subcommands."""
    data = sub.add_parser("data", help="datasets: prepare the canonical files, verify a data root, download sources")
    commands = data.add_subparsers(dest="data_command", required=True)
    p = commands.add_parser("prepare", help="make a dataset's canonical npz from its usual distribution")
    p.add_argument("name", help="a registered dataset (aflw2000, fer2013, lfw_pairs, utkface) or folder/csv (your "
                                "own labelled images)")
    p.add_argument("--src", required=True, help="the distribution: a folder, zip, tar(.gz) or file (fer2013.csv)")
    p.add_argument("--dst", required=True, help="the data root to write into (ROOT/<its relative path>)")
    p.add_argument("--size", type=PIXELS, help="output side in px (default: the dataset's)")
    p.add_argument("--color", choices=["gray", "rgb"], help="output colour (lfw_pairs, folder, csv)")
    p.add_argument("--seed", type=_number(int, NON_NEGATIVE), help="seed of the subsample and split")
    p.add_argument("--subsample", type=_subsample, help="images kept (fer2013: train images, class-stratified; "
                                                         "utkface: all images), or 'all'")
    p.add_argument("--split", type=lambda t: t if t == "none" else _numbers(float, 3)(t), metavar="TRAIN,VAL,TEST",
                   help="split fractions where the source gives none (e.g. 0.7,0.1,0.2); folder/csv: 'none' writes "
                        "no split, a set only to test on")
    p.add_argument("--crop", type=_numbers(int, 4), metavar="X0,Y0,X1,Y1",
                   help="the crop box on the source images (lfw_pairs: its fixed box; folder/csv: none by default)")
    p.add_argument("--pairs", help="lfw_pairs: pairs.txt (default: one in the source or beside it)")
    p.add_argument("--name", dest="dataset_name", metavar="NAME", help="folder/csv: the dataset's name")
    p.add_argument("--label-key", help="folder/csv: the label array's name (a task's: label, age, gender, pose)")
    p.add_argument("--classes", type=lambda t: tuple(t.split(",")), metavar="A,B,...",
                   help="folder/csv: the class order (default: sorted names)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other converter parameter (e.g. aflw2000's box_scale=1.35)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_data_prepare, show=_print_prepared)

    p = commands.add_parser("verify", help="what a data root (or one npz) holds; fails if anything is invalid")
    p.add_argument("target", help="a data root or a canonical .npz")
    p.set_defaults(run=_data_verify, show=lambda result: None, json=False)

    p = commands.add_parser("download", help="fetch a dataset's distribution where its terms allow it")
    p.add_argument("name", help="a registered dataset")
    p.add_argument("--dst", default=".", help="folder for the files (default: the current folder)")
    p.add_argument("--variant", help="lfw_pairs: original (default), funneled or deepfunneled")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_data_download, show=_print_download)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="etlbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered backbones, tasks, datasets or methods")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--data-root", help="folder of the canonical datasets (default: $ETLBENCH_DATA)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_list, show=_print_list)

    p = sub.add_parser("transfer", help="fine-tune the whole source network with a new head (transfer baseline)")
    p.add_argument("--task", required=True)
    p.add_argument("--backbone", help="default: dlib-resnet29")
    p.add_argument("--backbone-weights", help="a local weights file (relative: under $ETLBENCH_MODELS)")
    p.add_argument("--dataset", help="registered dataset or a canonical .npz path (default: the task's own, "
                                     "or synthetic without a data root)")
    p.add_argument("--data-root", help="folder of the canonical datasets (default: $ETLBENCH_DATA)")
    p.add_argument("--input-size", type=PIXELS, help="square input size in px (default: the backbone's)")
    p.add_argument("--samples", type=COUNT, help="the budget in samples seen (default: the transfer recipe's)")
    p.add_argument("--epochs", type=COUNT, help="the budget in epochs instead")
    p.add_argument("--batch-size", type=COUNT)
    p.add_argument("--lr", type=_number(float, NON_NEGATIVE),
                   help="the head's learning rate (the trunk's is scaled by trunk_lr_scale)")
    p.add_argument("--max-train", type=COUNT, help="use a seeded random subset of the train split")
    p.add_argument("--seed", type=_number(int, NON_NEGATIVE), default=0)
    p.add_argument("--threads", type=COUNT, default=1,
                   help="torch and BLAS threads (default 1, as in the presets' trials; part of the baseline id)")
    _precision_option(p)
    p.add_argument("--out", default="runs/transfer", help="folder for the checkpoint (default: runs/transfer)")
    p.add_argument("--json", action="store_true", help="print the result row as JSON")
    p.set_defaults(run=_transfer, show=_print_transfer)

    p = sub.add_parser("prune", help="one trial: prune to a budget, recover, evaluate and measure; prints one row")
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--compression", required=True, type=_compression,
                   help="target parameter compression (baseline/pruned), e.g. 4; 'auto' lets etl pick its own")
    p.add_argument("--budget-of", choices=["params", "macs"], default="params",
                   help="what the compression ratio counts (default: parameters)")
    p.add_argument("--seed", type=_number(int, NON_NEGATIVE), default=0)
    p.add_argument("--backbone", help="default: dlib-resnet29")
    p.add_argument("--backbone-weights", help="a local weights file (relative: under $ETLBENCH_MODELS)")
    p.add_argument("--dataset")
    p.add_argument("--data-root")
    p.add_argument("--input-size", type=PIXELS)
    p.add_argument("--max-train", type=COUNT)
    p.add_argument("--transfer-samples", type=COUNT,
                   help="samples seen by the transfer baseline (trained once, then cached; default: its recipe's)")
    p.add_argument("--transfer-epochs", type=COUNT, help="its budget in epochs instead")
    p.add_argument("--recovery-samples", type=COUNT, help="samples seen in recovery (default: the shared recipe's)")
    p.add_argument("--recovery-epochs", type=COUNT, help="the recovery budget in epochs instead")
    p.add_argument("--recovery-steps", type=COUNT, help="cap the recovery at this many steps (the same for all)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a method parameter")
    p.add_argument("--threads", type=COUNT, default=1, help="torch threads for training and latency")
    _precision_option(p)
    p.add_argument("--cache", default="runs/cache", help="transfer baselines and ETL probes are cached here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_prune, show=_print_row)

    p = sub.add_parser("run", help="run an experiment (a preset or a YAML spec) on Ray into a results database")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a named preset (smoke, quick, reference, ...); default: quick where a data "
                                         "root is set, else smoke on synthetic faces")
    source.add_argument("--config", help="a YAML experiment spec")
    p.add_argument("--out", required=True, help="folder of the results database, models and reports")
    p.add_argument("--resume", action="store_true", help="go on with the trials that are not stored as done")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--workers", type=COUNT, help="trials at once (default: usable cores / threads per trial)")
    p.add_argument("--data-root", help="folder of the canonical datasets (default: $ETLBENCH_DATA)")
    p.add_argument("--backbone", help="run the spec on this backbone instead of its own (e.g. mobilefacenet)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument("--train-only", action="store_true",
                       help="leave the trained models unmeasured, for a later --resume on the machine to report")
    stage.add_argument("--measure-only", action="store_true",
                       help="train nothing: measure the models already trained (e.g. of a run stopped before its "
                            "end); the other trials stay for a later --resume")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of the live progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(run=_run, show=_print_run)

    p = sub.add_parser("evaluate", help="score every stored model of a run on another dataset of the same task")
    p.add_argument("dir", help="the --out folder of `etlbench run`")
    p.add_argument("--dataset", required=True, help="a canonical .npz file or a registered dataset name")
    p.add_argument("--task", help="evaluate only this task's models (default: every task the dataset has labels for)")
    p.add_argument("--data-root", help="folder of the registered datasets (default: $ETLBENCH_DATA)")
    p.add_argument("--skip-scored", action="store_true",
                   help="score only the models not yet scored on this dataset (default: score every model again)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report afterwards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_evaluate, show=_print_evaluate)

    p = sub.add_parser("report", help="write the leaderboard (md, csv, html) and figures of a run's results")
    p.add_argument("dir", help="the --out folder of `etlbench run`")
    p.add_argument("--figures-only", action="store_true", help="write the figures, not the leaderboard")
    p.add_argument("--format", nargs="+", default=["png", "svg"], choices=["png", "svg", "pdf"],
                   help="figure formats (default: png svg)")
    p.add_argument("--code-version", help="report the rows of this code version (default: the newest of each "
                                           "experiment and backbone)")
    p.add_argument("--backbone", help="report only this backbone's rows")
    p.add_argument("--experiment", help="report only this experiment's rows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_report, show=_print_report)

    _add_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ETLBENCH_DEBUG", "") not in ("", "0")
    try:
        result = args.run(args)
    except RunInterrupted as stop:
        resume = argv if "--resume" in argv else [*argv, "--resume"]
        print(f"etlbench: interrupted: {stop}; go on with: {shlex.join(['etlbench', *resume])}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("etlbench: interrupted", file=sys.stderr)
        return 130
    except (EtlbenchError, FileNotFoundError) as err:
        if debug:
            traceback.print_exc()
        print(f"etlbench: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not the input's fault: one line, the traceback on request
        if debug:
            traceback.print_exc()
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"etlbench: internal error: {type(err).__name__}: {first} (a bug: please report it with the traceback "
              f"that --debug shows)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        args.show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
