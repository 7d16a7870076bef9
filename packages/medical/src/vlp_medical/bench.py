"""BenchX-style evaluation: one fixed protocol for every checkpoint, one table of mean ± std, CSV/JSON.

A suite (YAML, see :class:`Suite`) fixes the dataset and its splits, the image preprocessing, the label source,
the prompt sets and the seeds ({42, 0, 1} by default). For every checkpoint it runs:

- **zero-shot multi-label AUROC** per prompt set: per class ``score = mean_p sim(x, p) - mean_n sim(x, n)`` over the
  class's prompts ``p`` and negative prompts ``n`` (CheXzero-style pairs), macro AUROC over classes, with the
  model's own similarity (cosine, or Hellinger for probabilistic checkpoints); plus single-finding accuracy
  (CheXpert-5x200-style argmax over classes on test images with exactly one positive class);
- **zero-shot with validation-selected prompts** per prompt pool (``Suite.prompt_pools``): for every class the
  (prompt, negative) pair of the pool with the best AUROC on the **validation** split is chosen per checkpoint
  (:func:`select_prompts`), then scored on the test split like a fixed set; the chosen pairs are recorded. Such a
  choice fits the validation labels a little: on the medical demo (pools of 9 class-name and ~85 disjoint pairs
  per class, 120 validation images) the CLIP shuffled-pair control rose from 0.49 to 0.59 / 0.61 and the random
  tower from 0.49 to 0.50 / 0.58, so compare selected rows only with controls selected the same way;
- **linear probe** on frozen image features at the suite's training fractions × seeds, weight decay selected on
  the validation split only (core :func:`~vlp_core.eval.linear_probe`), test macro AUROC;
- **full fine-tuning** (``Suite.finetune_steps`` > 0): a copy of the image tower plus a linear head trained end to
  end with BCE at the fine-tune fractions × seeds; the step is selected on the validation macro AUROC (evaluated
  every ``finetune_eval_every`` steps), the test split is scored once with the selected weights
  (:func:`full_finetune`);
- **retrieval** image → report and report → image R@K on the test split (identical report texts count as the
  same item);
- **uncertainty** (probabilistic checkpoints): AUROC of the image's Σσ² for predicting a wrong top-1
  image → report retrieval, twice: not the image's own report (exact pair), and a report whose finding labels
  differ from the image's (plausible match, :func:`top1_findings_wrong`), each with a bootstrap 95 % CI.

Zero-shot and retrieval are deterministic given a checkpoint (std 0, one value); the probe and the fine-tune vary
with the seed. Segmentation is not part of this runner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from vlp_core.eval import (
    binary_auroc,
    bootstrap_ci,
    linear_probe,
    metrics_from_ranks,
    multilabel_auroc,
    retrieval_ranks,
)
from vlp_medical.datasets import CxrTextDataset, collate_cxr, manifest_index, mimic_cxr_index
from vlp_medical.prob import split_gaussian, uncertainty
from vlp_medical.transforms import CxrTransform

__all__ = [
    "Suite",
    "encode_images",
    "ensemble_embedding",
    "format_table",
    "load_checkpoint",
    "run_bench",
    "select_prompts",
    "write_results",
    "zero_shot_scores",
]

DEFAULT_SEEDS = (42, 0, 1)


@dataclass
class Suite:
    """One evaluation protocol.

    Attributes:
        name: suite name (shown in outputs).
        dataset: ``{"kind": "mimic" | "manifest", "root" | "path": ..., other indexer kwargs}``; relative paths are
            resolved against the suite file's folder.
        splits: ``{"train": ..., "val": ..., "test": ...}`` split names in the index.
        classes: class names (columns of the label source).
        labels: ``None`` (the index's label columns) or ``{"path": csv, "key": column}``: a ground-truth table
            joined on the index ``key`` (e.g. the phantom generator's ``phantom_truth.csv``).
        prompt_sets: ``{set name: {class: {"prompts": [...], "negatives": [...]}}}``.
        image: :class:`~vlp_medical.transforms.CxrTransform` kwargs (size, mean, std).
        read: image reader kwargs (``voi``...).
        seeds: probe seeds.
        fractions: probe training fractions.
        ks: retrieval cut-offs.
        batch_size: encoding batch size.
        probe_weight_decays: weight-decay grid of the probe (selected on validation).
        probe_max_iter: L-BFGS iterations per probe fit.
        prompt_combine: how several prompts of one side combine (``"similarity"`` or ``"embedding"``, see
            :func:`zero_shot_scores`).
        prompt_pools: ``{pool name: {class: {"prompts": [candidates], "negatives": [candidates]}}}``: candidate
            wordings from which :func:`select_prompts` picks one pair per class on the validation split.
        finetune_steps: optimiser steps of full fine-tuning (0 = off).
        finetune_fractions: training fractions of the fine-tune (``None`` = ``fractions``).
        finetune_seeds: seeds of the fine-tune (``None`` = ``seeds``).
        finetune_lr: AdamW learning rate (tower and head).
        finetune_batch_size: fine-tuning batch size.
        finetune_eval_every: validation interval (steps) for the step selection.
    """

    name: str
    dataset: dict[str, Any]
    classes: list[str]
    prompt_sets: dict[str, dict[str, dict[str, list[str]]]]
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "validate", "test": "test"})
    labels: dict[str, str] | None = None
    image: dict[str, Any] = field(default_factory=dict)
    read: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    batch_size: int = 64
    probe_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    probe_max_iter: int = 100
    prompt_combine: str = "similarity"
    prompt_pools: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    finetune_steps: int = 300
    finetune_fractions: list[float] | None = None
    finetune_seeds: list[int] | None = None
    finetune_lr: float = 1e-4
    finetune_batch_size: int = 32
    finetune_eval_every: int = 25

    @classmethod
    def from_yaml(cls, path: str | Path) -> Suite:
        import yaml

        path = Path(path)
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"suite {path}: expected a mapping at the top level")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"suite {path}: unknown keys {sorted(unknown)}")
        suite = cls(**data)
        suite.resolve(path.parent)
        return suite

    def resolve(self, base: Path) -> None:
        for key in ("root", "path"):
            if key in self.dataset and not Path(self.dataset[key]).is_absolute():
                self.dataset[key] = str(base / self.dataset[key])
        if self.labels and not Path(self.labels["path"]).is_absolute():
            self.labels["path"] = str(base / self.labels["path"])
        for kind, sets in (("prompt set", self.prompt_sets), ("prompt pool", self.prompt_pools)):
            for set_name, prompts in sets.items():
                missing = [c for c in self.classes if c not in prompts]
                if missing:
                    raise ValueError(f"{kind} {set_name!r} has no prompts for {missing}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def load_index(suite: Suite) -> pd.DataFrame:
    """The suite's index frame with one float column per class (from the index or the ground-truth table)."""
    ds = dict(suite.dataset)
    kind = ds.pop("kind", "mimic")
    if kind == "mimic":
        frame = mimic_cxr_index(**ds)
    elif kind == "manifest":
        frame = manifest_index(**ds)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; choose 'mimic' or 'manifest'")
    if suite.labels:
        truth = pd.read_csv(suite.labels["path"], dtype={suite.labels.get("key", "key"): str})
        truth = truth.set_index(suite.labels.get("key", "key"))
        missing = [c for c in suite.classes if c not in truth.columns]
        if missing:
            raise KeyError(f"label table {suite.labels['path']} lacks classes {missing}")
        absent = ~frame["key"].isin(truth.index)
        if absent.any():
            raise KeyError(f"label table {suite.labels['path']} has no row for {int(absent.sum())} images")
        for c in suite.classes:
            frame[c] = truth.loc[frame["key"], c].to_numpy(dtype=np.float32)
    missing = [c for c in suite.classes if c not in frame.columns]
    if missing:
        raise KeyError(f"classes {missing} are not label columns of the index ({frame.attrs.get('labels')})")
    frame.attrs["labels"] = list(suite.classes)
    return frame


def load_checkpoint(path: str | Path) -> Any:
    """A ``save_pretrained`` folder -> model in eval mode (safetensors + JSON; nothing unpickled)."""
    from vlp_medical.models import MedicalPretrainer

    model = MedicalPretrainer.from_pretrained(path)
    return model.eval()


@torch.no_grad()
def encode_images(model: Any, dataset: CxrTextDataset, batch_size: int = 64) -> tuple[Tensor, Tensor, list[str]]:
    """Embeddings ``[N, E]``, labels ``[N, K]`` and report texts of a dataset (order preserved)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_cxr, num_workers=0)
    embs, labels, texts = [], [], []
    for batch in loader:
        embs.append(model.encode_image(batch["image"]).float().cpu())
        labels.append(batch["labels"])
        texts.extend(batch.get("text", []))
    return torch.cat(embs), torch.cat(labels), texts


@torch.no_grad()
def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    return torch.cat(
        [model.encode_text(list(texts[i : i + batch_size])).float().cpu() for i in range(0, len(texts), batch_size)]
    )


def ensemble_embedding(emb: Tensor, probabilistic: bool = False) -> Tensor:
    """One prompt-ensemble embedding ``[1, E]`` from ``[P, E]`` (CLIP's recipe: mean of the unit embeddings,
    re-normalised). Probabilistic ``[mu, logvar]`` rows: unit mean of the unit means, mean log σ²."""
    if not probabilistic:
        return F.normalize(F.normalize(emb, dim=-1).mean(0, keepdim=True), dim=-1)
    mu, logvar = split_gaussian(emb)
    return torch.cat([F.normalize(F.normalize(mu, dim=-1).mean(0, keepdim=True), dim=-1),
                      logvar.mean(0, keepdim=True)], -1)  # fmt: skip


@torch.no_grad()
def zero_shot_scores(
    model: Any, images: Tensor, prompts: Mapping[str, Mapping[str, Sequence[str]]], classes: Sequence[str],
    combine: str = "similarity",
) -> Tensor:  # fmt: skip
    """``[N, C]`` scores: similarity to the class prompts minus similarity to its negatives.

    ``combine``: ``"similarity"`` averages the similarities to the prompts of a side; ``"embedding"`` averages the
    prompt embeddings first (:func:`ensemble_embedding`) and scores against that one embedding.
    """
    if combine not in ("similarity", "embedding"):
        raise ValueError(f"combine must be 'similarity' or 'embedding', got {combine!r}")
    probabilistic = bool(getattr(model, "probabilistic", False))

    def side(texts: Sequence[str]) -> Tensor:
        emb = encode_texts(model, texts)
        if combine == "embedding":
            emb = ensemble_embedding(emb, probabilistic)
        return model.similarity(images, emb).mean(1)

    cols = []
    for c in classes:
        spec = prompts[c]
        score = side(spec["prompts"])
        if spec.get("negatives"):
            score = score - side(spec["negatives"])
        cols.append(score)
    return torch.stack(cols, 1)


def select_prompts(
    model: Any,
    val_images: Tensor,
    val_labels: Tensor,
    pool: Mapping[str, Mapping[str, Sequence[str]]],
    classes: Sequence[str],
) -> dict[str, dict[str, list[str]]]:
    """Per class, the (prompt, negative) pair of ``pool`` with the highest AUROC on **validation** embeddings.

    ``val_images`` ``[N, E]`` (image embeddings of the validation split) and ``val_labels`` ``[N, C]`` (NaN =
    unknown, ignored); ties keep the earlier candidate; a class without both label values on validation keeps
    the pool's first pair. Returns a prompt set for :func:`zero_shot_scores`. Pass validation data only: this
    is a choice, and a choice made on test data would leak into the reported number.
    """
    chosen: dict[str, dict[str, list[str]]] = {}
    for k, c in enumerate(classes):
        spec = pool[c]
        best, best_auc = (spec["prompts"][0], spec["negatives"][0]), -1.0
        y = val_labels[:, k]
        known = ~torch.isnan(y)
        if 0 < int(y[known].sum()) < int(known.sum()):
            for p in spec["prompts"]:
                for n in spec["negatives"]:
                    s = zero_shot_scores(model, val_images, {c: {"prompts": [p], "negatives": [n]}}, [c])[:, 0]
                    auc = binary_auroc(s[known], y[known])
                    if auc > best_auc:
                        best, best_auc = (p, n), auc
        chosen[c] = {"prompts": [best[0]], "negatives": [best[1]]}
    return chosen


def _retrieval(model: Any, img: Tensor, texts: list[str], ks: Sequence[int]) -> tuple[dict[str, float], Tensor]:
    """R@K / median rank both ways with core's :func:`~vlp_core.eval.retrieval_ranks` and the model's similarity.

    Identical report texts are one gallery item (every image carrying it is a positive of the text). Ties are
    scored the mean way (core's default): a model that scores everything alike gets chance-level ranks, not R@1 = 1.
    Returns the metrics and the image→text ranks ``[N]`` (float; > 1 = not uniquely top-1).
    """
    unique = sorted(set(texts))
    pos = {t: i for i, t in enumerate(unique)}
    gt = torch.tensor([pos[t] for t in texts])
    txt = encode_texts(model, unique)
    i2t_ranks = retrieval_ranks(img, txt, gt, similarity=model.similarity)
    t2i_ranks = retrieval_ranks(
        txt, img, query_ids=torch.arange(len(unique)), gallery_ids=gt, similarity=model.similarity
    )
    out = {f"i2t_{k}": v for k, v in metrics_from_ranks(i2t_ranks, ks).items()}
    out.update({f"t2i_{k}": v for k, v in metrics_from_ranks(t2i_ranks, ks).items()})
    return out, i2t_ranks


@torch.no_grad()
def top1_findings_wrong(model: Any, img: Tensor, labels: Tensor, texts: list[str]) -> Tensor:
    """Whether each image's top-1 report describes other findings than its own (PCME's "plausible match" view).

    Many patients share a finding set, and their reports differ only in phrasing an image cannot show; an exact-pair
    miss then says little about the image. Here a retrieval is wrong when the top-1 report's label vector (the
    labels of an image that carries that report) differs from the query's, NaN (not mentioned / uncertain) counting
    equal only to NaN.

    Args:
        model: a checkpoint with ``similarity`` and a text tower.
        img: image embeddings ``[N, E]``.
        labels: the images' labels ``[N, C]`` (the report of image ``i`` carries ``labels[i]``).
        texts: the images' report texts (``N``).

    Returns ``[N]`` float, 1 = the top-1 report's findings differ from the query's.
    """
    unique = sorted(set(texts))
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    txt = encode_texts(model, unique)
    top = torch.cat([model.similarity(img[i : i + 512], txt).argmax(1) for i in range(0, len(img), 512)])
    other = labels[torch.tensor([first[unique[j]] for j in top.tolist()], dtype=torch.long)]
    same = (labels == other) | (torch.isnan(labels) & torch.isnan(other))
    return (~same.all(1)).float()


@torch.no_grad()
def uncertainty_metrics(
    model: Any, img: Tensor, labels: Tensor, texts: list[str], ranks: Tensor | None = None
) -> dict[str, float]:
    """AUROC of the images' Σσ² for predicting a wrong top-1 image→report retrieval, with a bootstrap 95 % CI
    (1,000 resamples, seed 0) and the number of correct queries, for two notions of "wrong": not the image's own
    report (exact pair, ``ranks > 1``) and a report of other findings (:func:`top1_findings_wrong`, suffix
    ``" findings"``). A notion under which every query is right (or wrong) gives no rows.

    Args:
        model: a probabilistic checkpoint.
        img: image embeddings ``[N, 2D]``; labels ``[N, C]``; texts: the images' reports.
        ranks: image→text ranks ``[N]`` from :func:`_retrieval` (computed when ``None``).
    """
    if ranks is None:
        ranks = _retrieval(model, img, texts, (1,))[1]
    out: dict[str, float] = {}
    u = uncertainty(img)
    for tag, wrong in (("", (ranks > 1).float()), (" findings", top1_findings_wrong(model, img, labels, texts))):
        if 0 < wrong.sum() < len(wrong):
            # With few correct top-1 queries the AUROC is noisy: the CI says whether it is above 0.5.
            metric = f"AUROC(Σσ² → wrong top-1{tag} i→t)"
            ci = bootstrap_ci(binary_auroc, u, wrong, n=1000, seed=0)
            out[metric], out[f"{metric} 95% CI low"], out[f"{metric} 95% CI high"] = ci["point"], ci["low"], ci["high"]
            out[f"correct top-1{tag} queries"] = float(len(wrong) - wrong.sum())
    return out


def suite_datasets(suite: Suite, index: pd.DataFrame) -> dict[str, CxrTextDataset]:
    """Train/val/test datasets of a suite (fixed eval preprocessing, images cached after the first model)."""
    transform = CxrTransform(**suite.image)
    out = {}
    for role in ("train", "val", "test"):
        ds = CxrTextDataset(index, split=suite.splits[role], transform=transform, labels=suite.classes,
                            read_kwargs=suite.read, cache=True)  # fmt: skip
        if len(ds) == 0:
            raise ValueError(f"suite {suite.name}: split {suite.splits[role]!r} ({role}) is empty")
        out[role] = ds
    return out


def evaluate_model(
    model: Any, suite: Suite, index: pd.DataFrame, name: str, datasets: Mapping[str, CxrTextDataset] | None = None
) -> list[dict[str, Any]]:
    """All tasks of ``suite`` for one model -> long-format rows (method, task, metric, seed, value)."""
    datasets = datasets or suite_datasets(suite, index)
    sets = {role: encode_images(model, ds, suite.batch_size) for role, ds in datasets.items()}
    rows: list[dict[str, Any]] = []

    def add(task: str, metric: str, value: float, seed: int | None = None, **extra: Any) -> None:
        rows.append({"method": name, "task": task, "metric": metric, "seed": seed, "value": float(value), **extra})

    img, y, texts = sets["test"]
    prompt_sets = {name: (prompts, {}) for name, prompts in suite.prompt_sets.items()}
    for pool_name, pool in suite.prompt_pools.items():
        chosen = select_prompts(model, sets["val"][0], sets["val"][1], pool, suite.classes)
        prompt_sets[f"{pool_name} (val-selected)"] = (chosen, {"selected": json.dumps(chosen)})
    for set_name, (prompts, extra) in prompt_sets.items():
        scores = zero_shot_scores(model, img, prompts, suite.classes, combine=suite.prompt_combine)
        res = multilabel_auroc(scores, y, class_names=suite.classes, warn=False)
        add(f"zero-shot [{set_name}]", "macro AUROC", res["macro"], **extra)
        for c in suite.classes:
            if c in res["per_class"]:
                add(f"zero-shot [{set_name}]", f"AUROC {c}", res["per_class"][c])
        single = y.sum(1) == 1
        if single.any():
            acc = (scores[single].argmax(1) == y[single].argmax(1)).float().mean()
            add(f"zero-shot [{set_name}]", f"single-finding accuracy (n={int(single.sum())})", acc)
    if texts:
        ret, ranks = _retrieval(model, img, texts, suite.ks)
        for k, v in ret.items():
            if "R@" in k or "median_rank" in k:
                direction, metric = k.split("_", 1)
                add(f"retrieval {'image→report' if direction == 'i2t' else 'report→image'}", metric, v)
        if getattr(model, "probabilistic", False):
            for metric, value in uncertainty_metrics(model, img, y, texts, ranks).items():
                add("uncertainty", metric, value)
    feats = {r: (split_gaussian(sets[r][0])[0] if getattr(model, "probabilistic", False) else sets[r][0]) for r in sets}
    frames = {r: pd.DataFrame(sets[r][1].numpy(), columns=suite.classes) for r in sets}
    table = linear_probe(feats["train"], frames["train"], feats["val"], frames["val"], feats["test"], frames["test"],
                         fractions=suite.fractions, seeds=suite.seeds, multilabel=True,
                         weight_decays=suite.probe_weight_decays, max_iter=suite.probe_max_iter)  # fmt: skip
    for _, r in table.iterrows():
        for seed, v in zip(
            suite.seeds if len(r["values"]) == len(suite.seeds) else range(len(r["values"])), r["values"]
        ):
            add(f"linear probe {r['fraction']:g}", "macro AUROC", v, seed=seed, n_train=int(r["n_train"]))
    if suite.finetune_steps > 0:
        data = {role: _stack_images(ds) for role, ds in datasets.items()}
        for r in full_finetune(model, data, suite.classes, suite.finetune_fractions or suite.fractions,
                               suite.finetune_seeds or suite.seeds, suite.finetune_steps, lr=suite.finetune_lr,
                               batch_size=suite.finetune_batch_size, eval_every=suite.finetune_eval_every):  # fmt: skip
            add(f"fine-tune {r['fraction']:g}", "macro AUROC", r["test_metric"], seed=r["seed"], n_train=r["n_train"],
                best_step=r["best_step"], val_metric=r["val_metric"])  # fmt: skip
    return rows


def _stack_images(dataset: CxrTextDataset) -> tuple[Tensor, Tensor]:
    items = [d for d in (dataset[i] for i in range(len(dataset))) if d is not None]  # None: skipped under skip_bad
    return torch.stack([d["image"] for d in items]), torch.stack([torch.as_tensor(d["labels"]) for d in items]).float()


def full_finetune(
    model: Any,
    data: Mapping[str, tuple[Tensor, Tensor]],
    classes: Sequence[str],
    fractions: Sequence[float],
    seeds: Sequence[int],
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 32,
    eval_every: int = 25,
    weight_decay: float = 1e-4,
) -> list[dict[str, Any]]:
    """Full fine-tuning of a copy of ``model``'s image tower plus a linear head (multi-label BCE).

    For each (fraction, seed): the training subset is core's :func:`~vlp_core.eval.probe_subset_indices` (the
    probe's subsets, so fine-tune and probe see the same images); the head (and batch order) are seeded; every
    ``eval_every`` steps (and at the last step) the validation macro AUROC is computed and the best weights are
    kept (ties go to the earlier step); the test split is scored once, with those weights. ``model`` is not changed.

    Args:
        model: checkpoint with ``towers["image"]`` (probabilistic towers: the mean half of the embedding is used).
        data: ``{"train" | "val" | "test": (images [N, C, H, W], labels [N, K] with NaN = unknown)}``.
        classes: class names (K).
        fractions: training fractions in (0, 1].
        seeds: seeds.
        steps: optimiser steps per run.
        lr: AdamW learning rate.
        batch_size: batch size (drawn with replacement when the subset is smaller).
        eval_every: validation interval.
        weight_decay: AdamW weight decay.

    Returns:
        One dict per run: ``fraction, seed, n_train, best_step, val_metric, test_metric, val_curve`` (step → AUROC).
    """
    import copy

    from vlp_core.eval import probe_subset_indices

    if steps < 1 or eval_every < 1:
        raise ValueError(f"need steps >= 1 and eval_every >= 1, got {steps}, {eval_every}")
    probabilistic = bool(getattr(model, "probabilistic", False))
    xtr, ytr = data["train"]
    runs = []

    def scores(tower: torch.nn.Module, head: torch.nn.Module, x: Tensor) -> Tensor:
        tower.eval()
        dev = next(head.parameters()).device
        with torch.no_grad():
            out = []
            for i in range(0, len(x), 128):
                e = tower(x[i : i + 128].to(dev)).embedding
                out.append(head(split_gaussian(e)[0] if probabilistic else e).float().cpu())
        return torch.cat(out)

    def macro(tower: torch.nn.Module, head: torch.nn.Module, split: str) -> float:
        x, y = data[split]
        return float(multilabel_auroc(scores(tower, head, x), y, class_names=list(classes), warn=False)["macro"])

    for fraction in fractions:
        for seed in seeds:
            idx = probe_subset_indices(torch.nan_to_num(ytr, nan=0.0), fraction, seed, multilabel=True)
            torch.manual_seed(seed)
            tower = copy.deepcopy(model.towers["image"]).float()
            dev = next(tower.parameters()).device  # train where the checkpoint lives (CPU or an accelerator)
            with torch.no_grad():
                width = tower(xtr[:2].to(dev)).embedding.shape[-1] // (2 if probabilistic else 1)
            head = torch.nn.Linear(width, len(classes)).to(dev)
            opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr, weight_decay=weight_decay)
            g = torch.Generator().manual_seed(seed)
            best = (macro(tower, head, "val"), 0, copy.deepcopy((tower.state_dict(), head.state_dict())))
            curve = {0: best[0]}
            for step in range(1, steps + 1):
                tower.train()
                pick = idx[torch.randint(0, len(idx), (min(batch_size, len(idx)),), generator=g)]
                e = tower(xtr[pick].to(dev)).embedding
                logits = head(split_gaussian(e)[0] if probabilistic else e)
                y = ytr[pick].to(dev)
                known = ~torch.isnan(y)
                loss = F.binary_cross_entropy_with_logits(logits[known], y[known])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step % eval_every == 0 or step == steps:
                    curve[step] = macro(tower, head, "val")
                    if curve[step] > best[0]:  # NaN never wins
                        best = (curve[step], step, copy.deepcopy((tower.state_dict(), head.state_dict())))
            tower.load_state_dict(best[2][0])
            head.load_state_dict(best[2][1])
            runs.append({"fraction": float(fraction), "seed": int(seed), "n_train": int(len(idx)),
                         "best_step": best[1], "val_metric": best[0], "test_metric": macro(tower, head, "test"),
                         "val_curve": curve})  # fmt: skip
    return runs


def summarise(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long rows -> one row per (method, task, metric) with mean, std (over seeds; 0 for deterministic tasks), n."""
    df = pd.DataFrame(rows)
    g = df.groupby(["method", "task", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n="count").reset_index()
    return out


def format_table(summary: pd.DataFrame, metrics: Sequence[str] | None = None) -> str:
    """Markdown table: one row per (task, metric), one column per method, cells ``mean ± std``."""
    s = summary.copy()
    if metrics is not None:
        s = s[s["metric"].isin(metrics)]
    s["cell"] = [f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}" for m, sd, n in zip(s["mean"], s["std"], s["n"])]
    wide = s.pivot_table(index=["task", "metric"], columns="method", values="cell", aggfunc="first", sort=False)
    methods = list(dict.fromkeys(summary["method"]))
    wide = wide[[m for m in methods if m in wide.columns]]
    lines = ["| task | metric | " + " | ".join(wide.columns) + " |", "|---|---|" + "---|" * len(wide.columns)]
    for (task, metric), row in wide.iterrows():
        lines.append(f"| {task} | {metric} | " + " | ".join(str(v) if isinstance(v, str) else "-" for v in row) + " |")
    return "\n".join(lines)


def run_bench(
    models: Mapping[str, Any], suite: Suite, index: pd.DataFrame | None = None, progress: bool = False
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Evaluate every model (name -> model or checkpoint folder) under ``suite``; returns (summary, long rows)."""
    torch.manual_seed(suite.seeds[0])
    index = load_index(suite) if index is None else index
    datasets = suite_datasets(suite, index)
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        if isinstance(model, (str, Path)):
            model = load_checkpoint(model)
        model.eval()
        rows.extend(evaluate_model(model, suite, index, name, datasets))
    return summarise(rows), rows


def write_results(
    summary: pd.DataFrame, rows: Sequence[Mapping[str, Any]], out: str | Path, suite: Suite
) -> list[Path]:
    """``bench.csv`` (summary), ``bench_runs.csv`` (per seed), ``bench.json`` (both + the suite), ``bench.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.csv", out / "bench_runs.csv", out / "bench.json", out / "bench.md"]
    summary.to_csv(paths[0], index=False)
    pd.DataFrame(rows).to_csv(paths[1], index=False)
    paths[2].write_text(json.dumps({"suite": suite.to_dict(), "summary": summary.to_dict("records"), "runs": list(rows)},
                                   indent=2, default=float))  # fmt: skip
    paths[3].write_text(format_table(summary) + "\n")
    return paths
