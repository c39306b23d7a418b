"""The recipe search on val (issue 13): train the transfer baseline, or recover the same pruned models, under
several recipes and record their validation curves. Selection reads val only; each record also keeps the
test metric of the model val selected, for the record, never for choosing.

    python tools/recipe_search.py transfer --task head_pose --recipes docs/recipe-search/recipes.yaml --out T.jsonl
    python tools/recipe_search.py recovery --task head_pose --recipes docs/recipe-search/recipes.yaml --out R.jsonl \
        --transfer-recipe frozen-trunk10-long --pairs etl:2,taylor:2,etl:16,taylor:16

A recipe is a mapping of :class:`~etlbench.train.TrainConfig` fields over the recipes of before the search
(:data:`OLD_TRANSFER` for ``transfer``, :data:`OLD_RECOVERY` for ``recovery``), so that the file keeps its meaning
when the defaults change. A model is pruned again for each recipe (with ``norm: recalibrate`` the norms are
re-expressed before pruning), deterministically. Records are appended as JSON lines; a rerun skips what the
file already has. ``table`` prints them as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from etlbench.train import TrainConfig, use_threads
from etlbench.transfer import TransferSpec, probe_then_fine_tune, transfer_baseline
from etlbench.trial import TrialSpec, prune_context, teacher

#: The recipes before the search (code of commit cf528b2): 3 epochs, head lr 1e-4, trunk x0.1, no warm-up, fp32,
#: frozen norms; the baseline without, recovery with the conv balancing; 1 recovery epoch.
OLD_TRANSFER = TrainConfig(epochs=3, lr=1e-4, trunk_lr_scale=0.1, weight_decay=1e-4, warmup=0.0, norm="frozen",
                           precision="fp32", balance_convs=False, eval_at=())
OLD_RECOVERY = replace(OLD_TRANSFER, epochs=1, balance_convs=True)


def _recipes(path: str, section: str, names: str | None) -> dict[str, dict[str, Any]]:
    recipes = (yaml.safe_load(Path(path).read_text()) or {}).get(section) or {}
    wanted = names.split(",") if names else list(recipes)
    unknown = [n for n in wanted if n not in recipes]
    if unknown:
        raise SystemExit(f"{path}: no {section} recipe named {unknown}; it has {sorted(recipes)}")
    return {n: {k: tuple(v) if isinstance(v, list) else v for k, v in (recipes[n] or {}).items()} for n in wanted}


def _done(out: Path) -> set[str]:
    return {json.loads(line)["key"] for line in out.read_text().splitlines()} if out.is_file() else set()


def _append(out: Path, record: dict[str, Any]) -> None:
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{record['key']}: val {record['val_metric']:.4f} after {record['best_samples']:,} samples, "
          f"{record['seconds']:.0f} s", flush=True)


def _setting(args: argparse.Namespace, train: TrainConfig) -> TransferSpec:
    return TransferSpec(task=args.task, data_root=args.data_root, seed=args.seed, train=train,
                        threads=args.threads).resolved()


def transfer(args: argparse.Namespace) -> None:
    out, done = Path(args.out), _done(Path(args.out))
    for name, over in _recipes(args.recipes, "transfer", args.names).items():
        key = f"{args.task}:seed{args.seed}:transfer:{name}"
        if key in done:
            continue
        cfg = replace(OLD_TRANSFER, **over)
        row = transfer_baseline(_setting(args, cfg), Path(args.cache) / "transfer")[1]
        _append(out, {"key": key, "task": args.task, "seed": args.seed, "recipe": name, "overrides": over,
                      "val_metric": row["val_metric"], "best_samples": row["best_samples"],
                      "seconds": row["train_seconds"], "test_metric": row["metric"],
                      "probe_val_metric": row["probe_val_metric"], "curve": row["history"]})


def recovery(args: argparse.Namespace) -> None:
    out, done = Path(args.out), _done(Path(args.out))
    base = _recipes(args.recipes, "transfer", args.transfer_recipe)[args.transfer_recipe]
    setting = _setting(args, replace(OLD_TRANSFER, **base))
    recipes = _recipes(args.recipes, "recovery", args.names)
    for pair in args.pairs.split(","):
        method, compression = pair.split(":")
        todo = {n: o for n, o in recipes.items()
                if f"{args.task}:seed{args.seed}:{method}:{compression}:{n}" not in done}
        if not todo:
            continue
        for name, over in todo.items():  # pruned once per recipe: how norms are handled starts before pruning
            cfg = replace(OLD_RECOVERY, **over)
            spec = TrialSpec(setting=setting, method=method, compression=float(compression), recovery=cfg)
            pruner, budget = spec.configure()
            ctx, base_row = prune_context(spec, args.cache)
            result = probe_then_fine_tune(pruner.prune(ctx, budget).model, ctx.data, ctx.source.preprocess, ctx.size,
                                          cfg, args.seed, teacher(spec, ctx))
            metric = ctx.data.task.metric_name
            _append(out, {"key": f"{args.task}:seed{args.seed}:{method}:{compression}:{name}", "task": args.task,
                          "seed": args.seed, "method": method, "compression": float(compression), "recipe": name,
                          "overrides": over, "transfer_recipe": args.transfer_recipe,
                          "baseline_val_metric": base_row["val_metric"], "baseline_metric": base_row["metric"],
                          "val_metric": result.val_metrics[metric], "best_samples": result.best_samples,
                          "seconds": result.train_seconds, "test_metric": result.test_metrics[metric],
                          "curve": result.history})


def table(files: list[str]) -> str:
    """A markdown table of every record in ``files``: the recipe, its val metric at each anytime evaluation
    (samples: val), the best val and the seconds it took; test only for the record, in the last column."""
    lines = ["| setting | recipe | val at samples seen (anytime) | best val | seconds | test of the val choice |",
             "|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for f in files:
        for line in Path(f).read_text().splitlines():
            r = json.loads(line)
            if r["key"] in seen:  # the same recipe on the same model twice: the first record counts
                continue
            seen.add(r["key"])
            val = next(k for k in r["curve"][0] if k.startswith("val_"))
            curve = ", ".join(f"{p['samples']:,}: {p[val]:.3g}" for p in r["curve"])
            where = r["key"].rsplit(":", 1)[0]
            lines.append(f"| {where} | {r['recipe']} | {curve} | **{r['val_metric']:.4g}** | {r['seconds']:.0f} | "
                         f"{r['test_metric']:.4g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["transfer", "recovery", "table"])
    parser.add_argument("files", nargs="*", help="table: the JSON-lines files to tabulate")
    parser.add_argument("--task")
    parser.add_argument("--recipes", help="YAML with sections transfer: and recovery:")
    parser.add_argument("--names", help="comma-separated recipe names (default: all of the stage's)")
    parser.add_argument("--transfer-recipe", default="chosen", help="the baseline recovery starts from")
    parser.add_argument("--pairs", default="etl:2,taylor:2,etl:16,taylor:16", help="method:compression,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=os.environ.get("ETLBENCH_DATA"))
    parser.add_argument("--cache", default="runs/recipe-search/cache")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.stage == "table":
        print(table(args.files))
        return
    if not (args.task and args.recipes and args.out):
        parser.error(f"{args.stage} needs --task, --recipes and --out")
    use_threads(args.threads)
    (transfer if args.stage == "transfer" else recovery)(args)


if __name__ == "__main__":
    main()
