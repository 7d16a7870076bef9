"""Core's own end-to-end check: coloured shapes with captions, pretrained briefly, evaluated zero-shot.

Used by ``vlp demo core`` and by the tests; it exercises towers, ClipLoss, the Pretrainer and zero-shot evaluation
without any domain package.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from vlp_core.training.datamodule import PairedDataModule

__all__ = ["COLOURS", "SHAPES", "ShapesDataModule", "ShapesDataset", "render_shape", "run_core_demo"]

COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.2, 1.0)}
SHAPES = ("circle", "square", "triangle")
_PHRASES = ("a {c} {s}", "an image of a {c} {s}", "a small {c} {s} on a dark background", "{c} {s}", "the {s} is {c}")


def render_shape(shape: str, colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one shape at a random position and scale. Returns ``[3, size, size]`` float32 in [0, 1] plus noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.22, 0.35) * size
    cy, cx = rng.uniform(r, size - r, size=2)
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif shape == "square":
        mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    elif shape == "triangle":
        top = cy - r
        mask = (yy >= top) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - top) / (2 * r) * r * 1.15)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    img = np.zeros((3, size, size), np.float32) + 0.05
    img[:, mask] = np.asarray(COLOURS[colour], np.float32)[:, None]
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return img.clip(0, 1)


class ShapesDataset(Dataset):
    """``n`` captioned shape images; sample ``{"image": [3, S, S], "text": str, "label": int}``.

    Labels index ``classnames()`` (colour × shape); captions vary in phrasing.
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        prng = random.Random(seed)
        self.classes = [(c, s) for c in COLOURS for s in SHAPES]
        self.labels = rng.integers(0, len(self.classes), n)
        self.images = np.stack([render_shape(self.classes[k][1], self.classes[k][0], size, rng) for k in self.labels])
        self.texts = [prng.choice(_PHRASES).format(c=self.classes[k][0], s=self.classes[k][1]) for k in self.labels]

    def classnames(self) -> list[str]:
        return [f"{c} {s}" for c, s in self.classes]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.images[i]), "text": self.texts[i], "label": int(self.labels[i])}


class ShapesDataModule(PairedDataModule):
    """Shapes as a LightningDataModule, so ``vlp``'s CLI machinery can be exercised from YAML.

    Args:
        n_train: training images.
        n_val: validation images (a different seed).
        size: image side in pixels.
        batch_size: per-device batch size.
        seed: data and shuffling seed.
    """

    def __init__(
        self, n_train: int = 256, n_val: int = 64, size: int = 32, batch_size: int = 32, seed: int = 0
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.n_train, self.n_val, self.size = n_train, n_val, size

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ShapesDataset(self.n_train, self.size, seed=self.seed)
            self.val_set = ShapesDataset(self.n_val, self.size, seed=self.seed + 10_000)
            self.test_set = self.val_set


def run_core_demo(ctx):  # noqa: ANN001 - DemoContext, imported lazily to keep this module light
    """Pretrain a small CNN against the frozen packaged MiniLM on shapes, then zero-shot classify held-out images."""
    import lightning as L
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlp_core.demo import DemoResult
    from vlp_core.eval import zero_shot_classifier
    from vlp_core.losses import ClipLoss
    from vlp_core.towers import ImageTower, TextTower
    from vlp_core.training import LossTerm, PairedDataModule, Pretrainer

    L.seed_everything(ctx.seed, workers=True, verbose=False)
    n_train, steps = (512, 60) if ctx.scale == "small" else (8192, 1500)
    train, test = ShapesDataset(n_train, seed=ctx.seed), ShapesDataset(270, seed=ctx.seed + 1)
    model = Pretrainer(
        {"image": ImageTower("resnet10t", embed_dim=128), "text": TextTower(embed_dim=128)},
        [LossTerm("clip", ClipLoss(), inputs=("image", "text"))],
        lr=2e-3, weight_decay=0.05, warmup_steps=10, max_steps=steps,
    )  # fmt: skip
    history: list[float] = []

    class _Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            history.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=ctx.progress, enable_model_summary=False, callbacks=[_Record()],
    )  # fmt: skip
    trainer.fit(model, PairedDataModule(batch_size=64, train_set=train, seed=ctx.seed))

    model.eval()
    with torch.no_grad():
        images = torch.from_numpy(test.images)
        feats = torch.nn.functional.normalize(model.encode("image", images).embedding, dim=-1)
        encode_text = lambda t: model.encode("text", list(t)).embedding  # noqa: E731
        classifier = zero_shot_classifier(encode_text, test.classnames(), ["a {}", "an image of a {}"])
        pred = (feats @ classifier.T).argmax(1).numpy()
    acc = float((pred == test.labels).mean())

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(history)
    axes[0].set(title="training loss (ClipLoss)", xlabel="step", ylabel="loss")
    conf = np.zeros((len(test.classes), len(test.classes)))
    np.add.at(conf, (test.labels, pred), 1)
    axes[1].imshow(conf, cmap="Blues")
    axes[1].set(title=f"zero-shot confusion (acc {acc:.2f})", xticks=range(9), yticks=range(9))
    axes[1].set_xticklabels(test.classnames(), rotation=90, fontsize=6)
    axes[1].set_yticklabels(test.classnames(), fontsize=6)
    fig.tight_layout()
    path = ctx.out_dir / "core_shapes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    chance = 1 / len(test.classes)
    return DemoResult(
        domain="core",
        metrics={"zero-shot accuracy": acc, "chance": chance, "final loss": float(np.mean(history[-10:]))},
        primary="zero-shot accuracy",
        target=0.5,
        figures=[path],
        notes=[
            f"Shapes check: {n_train} captioned images, {steps} steps of ClipLoss (resnet10t vs frozen MiniLM), "
            f"zero-shot over {len(test.classes)} classes on {len(test)} held-out images (chance {chance:.2f}).",
            f"Loss went from {history[0]:.3f} to {np.mean(history[-10:]):.3f} (log(64) = {math.log(64):.3f}).",
        ],
    )
