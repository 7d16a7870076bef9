"""End to end through the command line on a tiny phantom tree: CLIP, zero-shot, retrieval, VAE, diffusion,
generation to NIfTI with the right geometry."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from safetensors.torch import load_file

from vlp_ct3d.cli import main


def test_cli_end_to_end(tmp_path: Path) -> None:
    root, cache = tmp_path / "ctrate", str(tmp_path / "cache")
    main(["phantoms", str(root), "--n_train", "8", "--n_valid", "6", "--seed", "1"])
    common = ["--cache", cache]
    main(["fit-clip", str(root), str(tmp_path / "clip"), "--steps", "2", "--batch_size", "4", "--volume_tower", "conv",
          "--embed_dim", "16", *common])  # fmt: skip
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"Cardiomegaly": {"pos": ["Big heart."], "neg": ["Normal heart."]}}))
    main(["zeroshot", str(tmp_path / "clip"), str(root), "--prompts_file", str(prompts), "--n_boot", "10",
          "--out", str(tmp_path / "zs"), *common])  # fmt: skip
    rows = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert [r["prompts"] for r in rows] == ["class-name pairs", "user prompts"]
    main(["retrieve", str(tmp_path / "clip"), str(root), "--out", str(tmp_path / "ret"), *common])
    assert "volume->volume mAP (same labels)" in json.loads((tmp_path / "ret" / "retrieval.json").read_text())
    main(["fit-vae", str(root), str(tmp_path / "vae"), "--channels", "[8, 8]", "--steps", "2", *common])
    # Stopped after 1 step and resumed to 2 from the command's checkpoint: the same VAE as the straight run.
    main(["fit-vae", str(root), str(tmp_path / "vae1"), "--channels", "[8, 8]", "--steps", "1",
          "--checkpoint_dir", str(tmp_path / "vae_ckpt"), *common])  # fmt: skip
    main(["fit-vae", str(root), str(tmp_path / "vae2"), "--channels", "[8, 8]", "--steps", "2",
          "--resume_from", str(tmp_path / "vae_ckpt" / "last.ckpt"), *common])  # fmt: skip
    straight, resumed = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("vae", "vae2"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    main(["fit-diffusion", str(root), str(tmp_path / "clip"), str(tmp_path / "vae"), str(tmp_path / "pipe"),
          "--steps", "2", "--batch_size", "4", "--context_length", "16", *common])  # fmt: skip
    main(["generate", str(tmp_path / "pipe"), str(tmp_path / "gen"), "--prompt", "Cardiomegaly was observed.",
          "--steps", "2", "--seed", "3"])  # fmt: skip
    img = nib.load(str(tmp_path / "gen" / "sample_000.nii.gz"))
    assert img.shape == (32, 32, 32) and img.get_data_dtype() == np.int16
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and img.header.get_zooms() == (10.0, 10.0, 10.0)
    np.testing.assert_allclose(img.affine[:3, 3], [-155.0, -155.0, -155.0])  # grid centred on the origin
    data = np.asarray(img.dataobj)
    assert data.min() >= -1000 and data.max() <= 1000
    assert (tmp_path / "gen" / "sample_000.png").is_file()
    # Sliding-window decoding: a window covering the latent grid (16^3 here) is the full decode; a smaller one runs.
    for w in ("32", "8"):
        main(["generate", str(tmp_path / "pipe"), str(tmp_path / f"gen{w}"), "--prompt", "Cardiomegaly was observed.",
              "--steps", "2", "--seed", "3", "--decode_window", w, "--decode_overlap", "0.5"])  # fmt: skip
    same = np.asarray(nib.load(str(tmp_path / "gen32" / "sample_000.nii.gz")).dataobj)
    np.testing.assert_array_equal(same, data)
    assert nib.load(str(tmp_path / "gen8" / "sample_000.nii.gz")).shape == (32, 32, 32)


def test_demo_clip_config_trains_through_the_cli(tmp_path: Path) -> None:
    """``configs/fit_clip_demo.yaml`` (the demo's recipe: MLP text head with embedding noise, pyramid pooling) parses
    and trains; the saved model carries that recipe."""
    from vlp_core.training import Pretrainer
    from vlp_ct3d.demo import DEMO_CLIP

    root = tmp_path / "ctrate"
    main(["phantoms", str(root), "--n_train", "6", "--n_valid", "2", "--seed", "2"])
    config = Path(__file__).resolve().parents[1] / "configs" / "fit_clip_demo.yaml"
    main(["fit-clip", "--config", str(config), str(root), str(tmp_path / "clip"), "--steps", "2", "--batch_size", "4",
          "--cache", str(tmp_path / "cache")])  # fmt: skip
    model = Pretrainer.from_pretrained(tmp_path / "clip")
    assert model.towers["image"].pooling == "pyramid" and model.towers["image"].finer_proj is not None
    assert isinstance(model.towers["text"].proj.net, torch.nn.Sequential)  # the MLP head, not a Linear
    assert model.towers["text"].proj.input_noise == DEMO_CLIP["text_noise"] > 0
    assert model.towers["image"].stem.out_channels == DEMO_CLIP["widths"][0]
    assert [st[0].c2.out_channels for st in model.towers["image"].stages] == list(DEMO_CLIP["widths"])
