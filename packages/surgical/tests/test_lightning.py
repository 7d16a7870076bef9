"""Lightning engine: HecVLModule + VideoDataModule train, checkpoint safely, resume exactly, and run under DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from vlp_surgical.lightning import HecVLModule, VideoDataModule
from vlp_surgical.models import HecVL
from vlp_surgical.synth import make_procedures
from vlp_surgical.training import HecVLObjective, ProcedureCorpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> ProcedureCorpus:
    root = make_procedures(tmp_path_factory.mktemp("lt") / "p", n_train=4, n_val=0, n_test=0, size=32,
                           phase_seconds=(2.0, 3.0), silent_fraction=0.4)  # fmt: skip
    return ProcedureCorpus(root, "train")


def _module(corpus: ProcedureCorpus, text=None, steps: int = 6) -> HecVLModule:
    torch.manual_seed(0)
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16, text_tower=text)
    objective = HecVLObjective(dtw_weight=1.0, ssl_weight=0.1, ssl_max_clips=4, retrieval_weight=0.5,
                               refresh_every=3, seed=0)  # fmt: skip
    return HecVLModule(model, objective, bank_items=corpus.items, steps=steps, seed=0)


def _trainer(root: Path, max_steps: int, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, use_distributed_sampler=False, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, **kw)  # fmt: skip


def test_lightning_resume_equals_uninterrupted(corpus: ProcedureCorpus, tmp_path: Path) -> None:
    """6 steps over 4 videos, 2 per batch (epochs of 2 steps): stopping after 3 steps (mid-epoch, after a bank
    refresh) and resuming from the .ckpt gives the weights and bank of the uninterrupted run."""
    L.seed_everything(0, verbose=False)
    full = _module(corpus)
    _trainer(tmp_path / "a", 6, enable_checkpointing=False).fit(full, VideoDataModule(corpus.items, 2, seed=0))

    L.seed_everything(0, verbose=False)
    first = _module(corpus, full.model.text)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ck", every_n_train_steps=3, save_top_k=-1)
    _trainer(tmp_path / "b", 3, callbacks=[ckpt]).fit(first, VideoDataModule(corpus.items, 2, seed=0))
    path = next((tmp_path / "ck").glob("*.ckpt"))
    state = torch.load(path, weights_only=True)  # safe to load: tensors and plain data only
    assert state["global_step"] == 3 and state["vlp_surgical"]["bank"].shape[0] > 0

    L.seed_everything(123, verbose=False)  # a fresh process: any global seed, new model and objective
    resumed = _module(corpus, full.model.text)
    _trainer(tmp_path / "c", 6, enable_checkpointing=False).fit(
        resumed, VideoDataModule(corpus.items, 2, seed=0), ckpt_path=str(path)
    )
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(resumed.objective.bank.bank, full.objective.bank.bank, rtol=1e-5, atol=1e-6)
    changed = any(not torch.equal(a, b) for a, b in zip(full.state_dict().values(), first.state_dict().values()))
    assert changed  # the last 3 steps did train
    with pytest.raises(ValueError, match="steps=6"):  # another schedule length is refused, not silently mixed
        _trainer(tmp_path / "d", 8, enable_checkpointing=False).fit(
            _module(corpus, full.model.text, steps=8), VideoDataModule(corpus.items, 2, seed=0), ckpt_path=str(path)
        )


def test_fit_cli_lightning_engine_under_ddp(tmp_path: Path, corpus: ProcedureCorpus) -> None:
    """`vlp-surgical fit --engine lightning --devices 2` on CPU (gloo DDP): trains, rank 0 saves the model, and the
    two replicas end identical."""
    script = Path(__file__).with_name("lightning_ddp_script.py")
    proc = subprocess.run([sys.executable, str(script), str(corpus.root), str(tmp_path)], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0.keys() == r1.keys() and len(r0) > 10
    for k, v in r0.items():
        if "running_" in k or "num_batches_tracked" in k:
            continue  # batch-norm statistics are per rank between DDP's broadcasts
        torch.testing.assert_close(v, r1[k], rtol=0, atol=0, msg=k)
    saved = HecVL.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(saved.vis_proj["clip"].weight, r0["vis_proj.clip.weight"])
    history = (tmp_path / "out" / "history.json").read_text()
    assert '"loss"' in history
