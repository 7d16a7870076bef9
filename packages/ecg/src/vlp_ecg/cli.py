"""``vlp-ecg``: ``fit``/``validate``/``test`` (LightningCLI via core's ``domain_cli``) plus ``prepare``, ``zeroshot``,
``probe``, ``plot``, ``demo``, ``ablate`` and ``text-study``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ablate", "benchmark", "demo", "main", "plot", "prepare", "probe", "text_study", "zeroshot"]


def prepare(
    dataset: str,
    root: str,
    out: str,
    sampling_rate: int = 100,
    target_fs: float = 100.0,
    duration: float = 10.0,
    expected_fs: float | None = None,
    labels: str = "superclass",
    text: str = "report",
    bandpass: tuple[float, float] | None = None,
    notch: float | None = None,
    missing: str = "error",
    nan: str = "interpolate",
    max_nan_gap: float = 0.05,
    max_nan_fraction: float = 0.01,
    skip_bad: bool = False,
    dtype: str = "float32",
    progress: bool = True,
    format: str = "memmap",
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Decode a dataset once into a memory-mapped store (default) or sharded streams for training.

    Args:
        dataset: ptbxl, mimic, ptbdb or manifest.
        root: dataset folder (manifest file for manifest).
        out: output store folder; with --format shards a folder or URL (s3://bucket/prefix) holding one shard
            stream per split (train/val/test).
        sampling_rate: PTB-XL records100 or records500.
        target_fs: stored rate (Hz).
        duration: stored length (s).
        expected_fs: reject records at another rate.
        labels: PTB-XL label level.
        text: PTB-XL text source (report or statements).
        bandpass: optional (low, high) Hz band-pass.
        notch: optional mains notch (Hz).
        missing: error or zero (zero-fill absent leads with a lead mask).
        nan: invalid (NaN) samples: interpolate (default; short gaps only), mask (mask the lead) or error.
        max_nan_gap: longest repairable gap (s).
        max_nan_fraction: largest repairable invalid share of a lead.
        skip_bad: skip and count bad records instead of stopping.
        dtype: float32 or float16.
        progress: progress bar.
        format: memmap (one memory-mapped store, right for PTB-XL-sized data) or shards (litdata shards, for
            MIMIC-IV-ECG-sized data or object storage; train with --data.init_args.shards OUT).
        num_workers: shards only: writer processes (default: all cores).
        chunk_bytes: shards only: target shard size.
        storage_options: shards only: credentials/endpoint for a URL (boto3 keywords, e.g. endpoint_url); default:
            the AWS environment variables/profiles.
    """
    from vlp_ecg.datasets import LoadConfig, index_dataset, prepare_shards, prepare_store, prepare_summary

    kwargs = {"sampling_rate": sampling_rate, "labels": labels, "text": text} if dataset == "ptbxl" else {}
    index = index_dataset(dataset, root, **kwargs)
    cfg = LoadConfig(target_fs=target_fs, duration=duration, expected_fs=expected_fs,
                     bandpass=tuple(bandpass) if bandpass else None, notch=notch, missing=missing, nan=nan,
                     max_nan_gap=max_nan_gap, max_nan_fraction=max_nan_fraction)  # fmt: skip
    if format == "shards":
        res = prepare_shards(index, out, cfg, skip_bad=skip_bad, dtype=dtype, num_workers=num_workers,
                             chunk_bytes=chunk_bytes, storage_options=storage_options, progress=progress)  # fmt: skip
        counts = ", ".join(f"{k}: {m['n_samples']} in {m['n_shards']} shards" for k, m in res["splits"].items())
        print(f"prepared {res['n']} records as shards ({counts}), {res['skipped']} skipped -> {out}")
        return res
    if format != "memmap":
        raise ValueError(f"--format must be memmap or shards, got {format!r}")
    meta = prepare_store(index, out, cfg, skip_bad=skip_bad, dtype=dtype, progress=progress)
    print(f"{prepare_summary(meta)} -> {out}")
    return meta


def _eval_sets(
    model: Any, dataset: str, root: str | None, store: str | None, labels: str, sampling_rate: int,
    duration: float, text: str, skip_bad: bool, splits: Sequence[str],
) -> tuple[list[Any], dict[str, str]]:  # fmt: skip
    from vlp_ecg.datasets import ECGStore, ECGTextDataset, LoadConfig, index_dataset, load_scp_statements

    fs = float(getattr(model.towers["ecg"], "fs", 100.0))
    descriptions: dict[str, str] = {}
    if store is not None:
        source: Any = ECGStore(store)
        if abs(source.fs - fs) > 1e-6:
            raise ValueError(f"store {store} is at {source.fs:g} Hz but the model expects {fs:g} Hz")
    else:
        if root is None:
            raise ValueError("give --root (dataset folder) or --store (prepared store)")
        kwargs = {"sampling_rate": sampling_rate, "labels": labels, "text": text} if dataset == "ptbxl" else {}
        source = index_dataset(dataset, root, **kwargs)
        if dataset == "ptbxl":
            descriptions = load_scp_statements(root)["description"].astype(str).to_dict()
    cfg = LoadConfig(target_fs=fs, duration=duration)
    sets = [ECGTextDataset(source, s, cfg=cfg, skip_bad=skip_bad) for s in splits]
    return sets, descriptions


def zeroshot(
    ckpt: str | None = None,
    dataset: str = "ptbxl",
    root: str | None = None,
    store: str | None = None,
    labels: str = "superclass",
    split: str = "test",
    classes: list[str] | None = None,
    prompts: str = "clinical",
    sampling_rate: int = 100,
    duration: float = 10.0,
    text: str = "report",
    allow_label_text: bool = False,
    n_boot: int = 1000,
    min_positives: int = 10,
    skip_bad: bool = False,
    out: str = "zeroshot_results",
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot multi-label classification: per-class and macro AUROC with bootstrap CIs (table + CSV/JSON).

    The same evaluation as the demo (:func:`vlp_ecg.eval.evaluate_model`: prompt x template ensembles, the rhythm
    classes as one exclusive group). Refuses when the pretraining text was the records' own SCP statements.

    Args:
        ckpt: save_pretrained folder or Lightning .ckpt (required).
        dataset: ptbxl, mimic, ptbdb or manifest.
        root: dataset folder.
        store: prepared store (instead of root).
        labels: PTB-XL label level: superclass, subclass, form, rhythm, diagnostic or all.
        split: evaluated split (test = strat_fold 10 for PTB-XL).
        classes: subset of classes (default: all with a positive).
        prompts: prompt set(s): clinical, descriptive or both (comma-separated).
        sampling_rate: PTB-XL records100/records500.
        duration: input length (s).
        text: how the model's pretraining text was built (report or statements); statements is refused.
        allow_label_text: evaluate anyway when text=statements; the output is labelled NOT zero-shot.
        n_boot: bootstrap replicates.
        min_positives: flag classes with fewer positives.
        skip_bad: skip and count bad records.
        out: output folder for zeroshot[_<set>].csv/json.
        seed: bootstrap seed.
    """
    from vlp_ecg.eval import check_label_text, evaluate_model, format_table, write_results
    from vlp_ecg.models import load_model

    text_source = text
    if store is not None:
        from vlp_ecg.datasets import ECGStore

        text_source = ECGStore(store).meta.get("info", {}).get("text", text) if text == "report" else text
    is_zero_shot = check_label_text(text_source, allow_label_text)
    model = load_model(_require_ckpt(ckpt))
    (ds,), desc = _eval_sets(model, dataset, root, store, labels, sampling_rate, duration, text, skip_bad, [split])
    cls = classes or [c for c in ds.classes if ds.labels[:, ds.classes.index(c)].sum() > 0]
    sets = [p.strip() for p in prompts.split(",") if p.strip()]
    results = evaluate_model(model, ds, cls, prompt_sets=sets, descriptions=desc, n_boot=n_boot,
                             min_positives=min_positives, seed=seed, progress=True)  # fmt: skip
    if not results:
        raise SystemExit(f"vlp-ecg zeroshot: no prompt set among {sets} describes every class {cls}")
    skipped = ds.policy.report()
    for name, res in results.items():
        res["skipped"] = skipped
        res["zero_shot"] = is_zero_shot
        if not is_zero_shot:
            res["warning"] = "NOT zero-shot: the pretraining text was built from the label statements used as prompts"
        head = f"{name} prompts" + ("" if is_zero_shot else " -- NOT ZERO-SHOT (label text in pretraining)")
        print(head)
        print(format_table(res))
        suffix = "" if len(results) == 1 else f"_{name}"
        paths = write_results(res, out, f"zeroshot{suffix}")
        print(f"wrote {', '.join(map(str, paths))}")
    return next(iter(results.values())) if len(results) == 1 else results


def probe(
    ckpt: str | None = None,
    dataset: str = "ptbxl",
    root: str | None = None,
    store: str | None = None,
    labels: str = "superclass",
    fractions: list[float] = [0.01, 0.1, 1.0],  # noqa: B006 - jsonargparse needs a literal default
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    sampling_rate: int = 100,
    duration: float = 10.0,
    text: str = "report",
    skip_bad: bool = False,
    out: str = "probe_results",
) -> Any:
    """Linear probe on frozen ECG embeddings at several training fractions; selection on the validation split only.

    Args:
        ckpt: save_pretrained folder or Lightning .ckpt (required).
        dataset: ptbxl, mimic, ptbdb or manifest.
        root: dataset folder.
        store: prepared store (instead of root).
        labels: PTB-XL label level.
        fractions: training fractions.
        seeds: subset seeds.
        sampling_rate: PTB-XL records100/records500.
        duration: input length (s).
        text: PTB-XL text source.
        skip_bad: skip and count bad records.
        out: output folder for probe.csv/json.
    """
    from vlp_ecg.eval import probe_evaluate, write_results
    from vlp_ecg.models import load_model

    model = load_model(_require_ckpt(ckpt))
    sets, _ = _eval_sets(model, dataset, root, store, labels, sampling_rate, duration, text, skip_bad,
                         ["train", "val", "test"])  # fmt: skip
    table = probe_evaluate(model, *sets, fractions=fractions, seeds=seeds, progress=True)
    print(table[["fraction", "metric", "summary", "n_train"]].to_markdown(index=False)
          if _has_tabulate() else table[["fraction", "metric", "summary", "n_train"]].to_string(index=False))  # fmt: skip
    paths = write_results(table.drop(columns=[c for c in ("values", "weight_decays") if c in table.columns]),
                          out, "probe")  # fmt: skip
    print(f"wrote {', '.join(map(str, paths))}")
    return table


def _require_ckpt(ckpt: str | None) -> str:
    if not ckpt:
        raise SystemExit("vlp-ecg: --ckpt is required (a save_pretrained folder or a Lightning .ckpt)")
    return ckpt


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def plot(record: str, out: str | None = None, report: str | None = None) -> str:
    """Plot a WFDB record as a standard 3x4 12-lead ECG with its report (default: header comments) to a PNG.

    Args:
        record: record path (with or without .hea).
        out: PNG path (default: <record>.png in the current folder).
        report: report text to print on the figure.
    """
    from vlp_ecg.plot import plot_record

    target = out or f"{Path(record).name.removesuffix('.hea')}.png"
    path = plot_record(record, target, report)
    print(f"wrote {path}")
    return str(path)


def demo(out: str = "runs/demo-ecg", data_dir: str | None = None, scale: str = "small", seed: int = 0) -> dict:
    """Run the embedded ECG demo (same as `vlp demo ecg`).

    Args:
        out: output folder for PNGs and results.
        data_dir: cache for the generated data (default: core's demo cache).
        scale: small or large.
        seed: seed.
    """
    from vlp_core.demo import DemoContext, default_cache_dir
    from vlp_ecg.demo import run_demo

    ctx = DemoContext(Path(out), Path(data_dir) if data_dir else default_cache_dir() / "demo" / "ecg", scale, seed)
    res = run_demo(ctx)
    print(json.dumps(res.metrics, indent=2))
    print("\n".join(res.notes))
    return res.metrics


def ablate(
    store: str | None = None,
    out: str = "runs/ablation-ecg",
    n_records: int = 2400,
    max_steps: int = 330,
    seed: int = 0,
    data_dir: str | None = None,
) -> list[dict]:
    """MELP level ablation (rhythm only, + beat, + token, all three): same steps, seed and data; zero-shot on the
    test split with clinical and descriptive prompts. Writes ablation.md and ablation.csv.

    Args:
        store: prepared store (default: the demo's synthetic corpus, generated once).
        out: output folder.
        n_records: synthetic corpus size when no store is given.
        max_steps: optimiser steps per variant.
        seed: seed.
        data_dir: cache for the generated data (default: core's demo cache).
    """
    from vlp_ecg.demo import run_ablation

    rows = run_ablation(store or _demo_store(n_records, seed, data_dir), max_steps=max_steps, seed=seed)
    return _write_suite(rows, out, "ablation")


def text_study(
    store: str | None = None,
    out: str = "runs/text-study-ecg",
    n_records: int = 2400,
    max_steps: int = 330,
    seed: int = 0,
    data_dir: str | None = None,
) -> list[dict]:
    """Descriptive-prompt study on the validation fold (9): frozen vs partly trained MiniLM, a longer schedule, and
    a larger descriptive prompt ensemble, with the demo's data and seed. Writes text_study.md and text_study.csv.

    Args:
        store: prepared store (default: the demo's synthetic corpus, generated once).
        out: output folder.
        n_records: synthetic corpus size when no store is given.
        max_steps: the demo's optimiser steps (variants scale it).
        seed: seed.
        data_dir: cache for the generated data (default: core's demo cache).
    """
    from vlp_ecg.demo import run_text_study

    rows = run_text_study(store or _demo_store(n_records, seed, data_dir), max_steps=max_steps, seed=seed)
    return _write_suite(rows, out, "text_study")


def _write_suite(rows: list[dict], out: str, name: str) -> list[dict]:
    """Print a study's rows as one table and write ``<name>.md`` and ``<name>.csv`` under ``out``."""
    import pandas as pd

    from vlp_ecg.eval import format_suite

    table = format_suite(rows)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{name}.md").write_text(table + "\n")
    pd.DataFrame(rows).to_csv(Path(out) / f"{name}.csv", index=False)
    print(table)
    return rows


def _demo_store(n_records: int, seed: int, data_dir: str | None) -> str:
    """The demo's prepared synthetic store (generated once in the cache)."""
    from vlp_core.demo import default_cache_dir
    from vlp_ecg.demo import prepare_demo_data

    cache = Path(data_dir) if data_dir else default_cache_dir() / "demo" / "ecg"
    return str(prepare_demo_data(cache, n_records, seed, progress=True))


def benchmark(
    ckpt: str | None = None,
    root: str | None = None,
    sampling_rate: int = 500,
    duration: float = 10.0,
    tasks: list[str] = ["superclass", "subclass", "form", "rhythm"],  # noqa: B006 - jsonargparse needs a literal
    fractions: list[float] = [0.01, 0.1, 1.0],  # noqa: B006
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    n_boot: int = 1000,
    skip_bad: bool = False,
    text: str = "report",
    allow_label_text: bool = False,
    out: str = "benchmark_results",
) -> Any:
    """PTB-XL benchmark: zero-shot on superclass/subclass/form/rhythm (fold 10) and linear probe 1/10/100 % (folds
    1-8, selection on fold 9), in MERL/MELP's table layout with their published numbers.

    Args:
        ckpt: save_pretrained folder or Lightning .ckpt (required).
        root: PTB-XL folder.
        sampling_rate: records100 or records500.
        duration: input length (s).
        tasks: label levels.
        fractions: probe training fractions.
        seeds: probe subset seeds.
        n_boot: bootstrap replicates.
        skip_bad: skip and count bad records.
        text: how the model's pretraining text was built (statements is refused unless allow_label_text).
        allow_label_text: evaluate anyway, labelled NOT zero-shot.
        out: output folder (benchmark.md, benchmark.csv).
    """
    from vlp_ecg.benchmark import ptbxl_benchmark

    if root is None:
        raise SystemExit("vlp-ecg benchmark: --root (the PTB-XL folder) is required")
    frame, table = ptbxl_benchmark(_require_ckpt(ckpt), root, sampling_rate, duration, tuple(tasks), tuple(fractions),
                                   tuple(seeds), n_boot, skip_bad, text, allow_label_text)  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "benchmark.md").write_text(table + "\n")
    frame.to_csv(Path(out) / "benchmark.csv", index=False)
    print(table)
    return frame


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``vlp-ecg``."""
    from vlp_core.cli import domain_cli
    from vlp_ecg.datasets import ECGDataModule
    from vlp_ecg.models import MELP

    result = domain_cli(
        "vlp-ecg",
        commands={
            "prepare": prepare,
            "zeroshot": zeroshot,
            "probe": probe,
            "plot": plot,
            "demo": demo,
            "ablate": ablate,
            "text-study": text_study,
            "benchmark": benchmark,
        },
        model_class=MELP,
        datamodule_class=ECGDataModule,
        args=None if argv is None else list(argv),  # None: LightningCLI reads sys.argv itself
        trainer_defaults={"accelerator": "auto"},
    )
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
