"""Towers: offline MiniLM text tower, embedding cache, partial unfreezing, timm image tower, weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlp_core.testing import TowerConformance
from vlp_core.towers import ImageTower, TextTower, TowerOutput, default_text_model_path


@pytest.fixture(scope="module")
def frozen() -> TextTower:
    torch.manual_seed(0)
    return TextTower(embed_dim=32)


def test_default_text_tower_is_real_minilm_and_semantic(frozen: TextTower) -> None:
    assert (default_text_model_path() / "config.json").is_file()
    assert frozen.hidden_size == 384
    pooled, *_ = frozen.encode_hidden(["atrial fibrillation", "irregular rhythm without p waves", "a red bicycle"])
    sim = torch.nn.functional.cosine_similarity(pooled[0:1], pooled[1:])
    assert sim[0] > sim[1]  # pretrained weights, not random: related clinical phrases are closer


def test_frozen_cache_returns_what_the_encoder_computes(frozen: TextTower) -> None:
    frozen.clear_cache()
    texts = ["sinus rhythm.", "left bundle branch block.", "sinus rhythm."]
    cached = frozen(texts)
    assert frozen.cache_size == 2
    frozen.cache_embeddings = False
    try:
        direct = frozen(texts)
    finally:
        frozen.cache_embeddings = True
    torch.testing.assert_close(cached.embedding, direct.embedding, rtol=1e-5, atol=1e-5)
    assert torch.equal(cached.extras["input_ids"], direct.extras["input_ids"])
    # Only the projection head trains.
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {"proj.net.weight", "proj.net.bias"}
    cached.embedding.sum().backward()
    assert frozen.proj.net.weight.grad is not None


def test_unfreeze_last_layers_and_tokens() -> None:
    tower = TextTower(embed_dim=16, unfreeze_last_n=1, pooling="cls")
    trainable = {
        n.split(".")[3] for n, p in tower.named_parameters() if p.requires_grad and n.startswith("encoder.encoder")
    }
    assert trainable == {"5"}  # only the last of six blocks
    assert not tower.cache_embeddings  # a trainable encoder must not be cached
    out = tower(["normal ecg", "st elevation in leads v1 to v3"])
    assert isinstance(out, TowerOutput) and out.tokens.shape[0] == 2 and out.tokens.shape[-1] == 16
    assert out.mask.dtype == torch.bool and out.mask[0].sum() < out.mask[1].sum()
    with pytest.raises(ValueError, match="blocks"):
        TextTower(unfreeze_last_n=7)


def test_sentence_mean_is_the_mean_of_unit_sentence_embeddings() -> None:
    torch.manual_seed(0)
    tower = TextTower(embed_dim=16, sentence_mean=True)
    reports = ["Heart size is normal. No pleural effusion.\nSmall left pneumothorax.", "No pleural effusion."]
    out = tower(reports)
    assert out.embedding.shape == (2, 16) and out.tokens is None
    assert out.extras["input_ids"].shape[0] == 2  # the whole texts' tokens, as in the default mode
    # Brute force: each sentence on its own through the same encoder, unit-normalised, averaged, projected.
    plain = TextTower(embed_dim=16)
    plain.proj.load_state_dict(tower.proj.state_dict())
    sents = ["Heart size is normal", "No pleural effusion", "Small left pneumothorax"]
    unit = torch.nn.functional.normalize(plain.encode_hidden(sents)[0], dim=-1)
    torch.testing.assert_close(out.embedding[0], plain.proj(unit.mean(0, keepdim=True))[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.embedding[1], plain.proj(unit[1:2])[0], rtol=1e-5, atol=1e-5)
    # Not the whole-text embedding (a bug that ignored the option would give this).
    assert not torch.allclose(out.embedding[0], plain(reports[:1]).embedding[0], atol=1e-3)
    assert tower.cache_size == 3  # sentences are cached one by one; the repeated one once
    with pytest.raises(ValueError, match="token"):
        TextTower(sentence_mean=True, cache_tokens=True)


def test_projection_input_noise_is_relative_training_only_and_seeded() -> None:
    from vlp_core.towers import ProjectionHead

    torch.manual_seed(0)
    x = torch.randn(4000, 64) * torch.tensor([0.1, 1.0, 5.0, 20.0]).repeat_interleave(1000)[:, None]
    head = ProjectionHead(64, 64, "none", input_noise=1.5)
    head.train()
    torch.manual_seed(1)
    noise = head(x) - x
    # Each vector's noise has 1.5x that vector's own std, whatever its scale.
    ratio = noise.std(-1) / x.std(-1)
    for block in ratio.view(4, 1000):
        assert abs(float(block.mean()) - 1.5) < 0.05
    torch.manual_seed(1)
    assert torch.equal(head(x) - x, noise)  # drawn from the global (seeded, checkpointed) generator
    head.eval()
    assert torch.equal(head(x), x)  # never at evaluation
    lin = ProjectionHead(64, 8, "linear", input_noise=0.5).train()
    x.requires_grad_(True)
    lin(x).sum().backward()
    expected = lin.net.weight.sum(0).expand_as(x)  # the noise scale is not differentiated through
    torch.testing.assert_close(x.grad, expected)
    with pytest.raises(ValueError, match="input_noise must be >= 0"):
        ProjectionHead(4, 4, input_noise=-0.1)


def test_text_tower_embed_noise_round_trips_in_its_config() -> None:
    from vlp_core.config import from_config, to_config

    tower = TextTower(embed_dim=16, embed_noise=2.0)
    assert tower.proj.input_noise == 2.0
    rebuilt = from_config(to_config(tower))
    assert rebuilt.proj.input_noise == 2.0
    tower.eval()
    texts = ["no pleural effusion.", "the heart is enlarged."]
    a, b = tower(texts).embedding, tower(texts).embedding
    assert torch.equal(a, b)  # eval: deterministic
    tower.train()
    assert not torch.equal(tower(texts).embedding, a)


def test_text_tower_bad_input(frozen: TextTower) -> None:
    with pytest.raises(ValueError, match="empty"):
        frozen(["fine", "   "])
    with pytest.raises(TypeError, match="list of strings"):
        frozen("just a string")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TextTower("sentence-transformers/all-mpnet-base-v2")


def test_image_tower_tokens_and_local_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    vit = ImageTower("vit_tiny_patch16_224", embed_dim=24, img_size=32)
    out = vit(torch.randn(2, 3, 32, 32))
    assert out.embedding.shape == (2, 24) and out.tokens.shape == (2, 4, 24)  # prefix (CLS) token dropped
    save_file({k: v.contiguous() for k, v in vit.backbone.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.manual_seed(1)
    other = ImageTower(
        "vit_tiny_patch16_224", embed_dim=24, img_size=32, pretrained_path=str(tmp_path / "w.safetensors")
    )
    for k, v in vit.backbone.state_dict().items():
        torch.testing.assert_close(other.backbone.state_dict()[k], v)
    with pytest.raises(ValueError, match="do not fit"):
        ImageTower("resnet18", pretrained_path=str(tmp_path / "w.safetensors"))
    with pytest.raises(KeyError, match="unknown timm model"):
        ImageTower("not_a_model")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        vit(torch.randn(3, 32, 32))


def test_pretrainer_with_custom_text_encoder_saves_its_assets(tmp_path: Path) -> None:
    """A user-supplied local encoder travels with save_pretrained (no dependency on the original folder)."""
    from vlp_core.losses import ClipLoss
    from vlp_core.training import LossTerm, Pretrainer

    src = tmp_path / "my_encoder"
    base = TextTower(embed_dim=None, proj="none")
    base.encoder.save_pretrained(str(src))
    base.tokenizer.save_pretrained(str(src))
    model = Pretrainer(
        {"a": TextTower(str(src), embed_dim=8), "b": TextTower(embed_dim=8)},
        [LossTerm("clip", ClipLoss(), inputs=("a", "b"))],
    )
    model.save_pretrained(tmp_path / "ckpt")
    import shutil

    shutil.rmtree(src)
    loaded = Pretrainer.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(loaded.encode("a", ["x y z"]).embedding, model.encode("a", ["x y z"]).embedding)


class TestImageTowerConformance(TowerConformance):
    def make_tower(self):
        return ImageTower("vit_tiny_patch16_224", embed_dim=16, img_size=32)

    def make_input(self, batch_size: int):
        return torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class TestTextTowerConformance(TowerConformance):
    def make_tower(self):
        return TextTower(embed_dim=16, unfreeze_last_n=1, cache_embeddings=False)

    def make_input(self, batch_size: int):
        return ["sinus rhythm", "atrial fibrillation with rapid ventricular response", "normal ecg"][:batch_size]


def test_import_leaves_hf_offline_env_alone_and_loads_locally(tmp_path) -> None:  # noqa: ANN001
    """Importing vlp must not flip HF_HUB_OFFLINE for the user's process; loading stays local without it."""
    import os
    import subprocess
    import sys

    script = (
        "import os\n"
        "import vlp_core, vlp_core.towers, vlp_core.towers.text\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ, os.environ.get('HF_HUB_OFFLINE')\n"
        "assert 'TRANSFORMERS_OFFLINE' not in os.environ\n"
        "from vlp_core.towers import TextTower\n"
        "out = TextTower(embed_dim=8)(['sinus rhythm'])\n"
        "assert out.embedding.shape == (1, 8)\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    # A Hub endpoint that refuses connections: any download attempt would fail instead of silently succeeding.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
