"""Text-to-CT: a 3D VAE (MONAI ``AutoencoderKL``) and a latent diffusion model (MONAI ``DiffusionModelUNet``)
cross-attending over the CLIP text-token sequence, as Lightning modules beside core's ``Pretrainer``.

Generative training is not contrastive pretraining, so these modules share only what core's Pretrainer does for
sharing and resuming (safetensors + JSON config, rebuild without pickle, exact resume of every rank's RNG state)
through core's :class:`~vlp_core.training.VlpModule` base, and add what generation needs:

- :class:`VAEModule`: manual optimisation of the generator/discriminator pair (L1 + KL, optional least-squares
  patch-adversarial term); the latent scale factor = 1 / std of the posterior means over many batches, stored as a
  buffer (so it travels with the weights) — never from one batch, never from sampled latents.
- :class:`LatentDiffusionModule`: an EMA copy of the UNet used for sampling, the noise scheduler as a separate
  object (:func:`make_scheduler`; DDPM/DDIM with ``clip_sample=False``, rectified flow), classifier-free-guidance
  condition dropout with ONE explicit null condition (an all-zero token sequence) shared by training and
  sampling, and our own sampling loop (MONAI's inferer fills the unconditional branch with −1).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vlp_core.config import Configurable
from vlp_core.training import VlpModule

__all__ = ["VAEModule", "LatentDiffusionModule", "make_scheduler", "SAMPLERS", "kl_divergence"]

SAMPLERS = ("ddpm", "ddim", "rflow")


def kl_divergence(mu: Tensor, sigma: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over latent elements, averaged over the batch."""
    var = sigma.pow(2)
    return 0.5 * (mu.pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1).flatten(1).sum(1).mean()


def _decode_window(window: int | Sequence[int], grid: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a latent decode window and clip it to the latent grid."""
    w = list(window) if isinstance(window, (list, tuple)) else [window] * len(grid)
    if len(w) != len(grid) or any(isinstance(v, bool) or int(v) != v or int(v) < 1 for v in w):
        raise ValueError(f"decode window must be a positive int or {len(grid)} positive ints, got {window!r}")
    return tuple(min(int(v), g) for v, g in zip(w, grid))


class VAEModule(Configurable, VlpModule):
    """MONAI ``AutoencoderKL(spatial_dims=3)`` with L1 + KL and an optional patch-adversarial term.

    Args:
        channels: encoder/decoder widths per level (down-sampling 2^(levels−1) per axis).
        latent_channels: latent channels.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups (must divide every width).
        attention: non-local attention in the deepest level (needs ``einops``).
        kl_weight: KL weight.
        adv_weight: patch-adversarial (least squares) generator weight; 0 = no discriminator.
        adv_start: generator step (batch) from which the adversarial term is used.
        disc_channels: discriminator base width.
        lr: generator learning rate (Adam).
        disc_lr: discriminator learning rate.
        perceptual_weight: weight of a 3D perceptual term (:class:`~vlp_ct3d.perceptual.PerceptualLoss3d`);
            0 = off. Needs ``perceptual_weights_path``: nothing is ever downloaded.
        perceptual_network: MedicalNet-layout 3D ResNet, one of ``vlp_ct3d.perceptual.PERCEPTUAL_NETWORKS``.
        perceptual_weights_path: local state-dict file of that network (safetensors, or a ``torch.save`` file read
            with ``weights_only=True``). Read when training starts (not when a saved VAE is loaded for inference);
            the frozen network is never part of the VAE's state dict.
        perceptual_state_dict_key: nested key of the state dict in that file (MedicalNet: ``"state_dict"``).
        perceptual_stages: residual stages compared (deep stages are ~1 voxel on 16³–32³ volumes).

    Batches: ``{"image": [B, 1, D, H, W]}`` in the preset's window (e.g. [0, 1]).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 32),
        latent_channels: int = 4,
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        attention: bool = False,
        kl_weight: float = 1e-6,
        adv_weight: float = 0.0,
        adv_start: int = 0,
        disc_channels: int = 16,
        lr: float = 1e-3,
        disc_lr: float = 5e-4,
        perceptual_weight: float = 0.0,
        perceptual_network: str = "medicalnet_resnet10",
        perceptual_weights_path: str | None = None,
        perceptual_state_dict_key: str | None = None,
        perceptual_stages: Sequence[str] = ("layer1", "layer2"),
    ) -> None:
        super().__init__()
        from monai.networks.nets import AutoencoderKL, PatchDiscriminator

        from vlp_ct3d.perceptual import PERCEPTUAL_NETWORKS, STAGES

        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight must be >= 0, got {perceptual_weight}")
        if perceptual_weight > 0 and not perceptual_weights_path:
            raise ValueError(
                f"perceptual_weight={perceptual_weight} needs perceptual_weights_path: a local state-dict file of "
                f"{perceptual_network!r} (safetensors or torch.save); perceptual weights are never downloaded"
            )
        if perceptual_network not in PERCEPTUAL_NETWORKS:
            raise ValueError(
                f"perceptual_network must be one of {sorted(PERCEPTUAL_NETWORKS)}, got {perceptual_network!r}"
            )
        if not perceptual_stages or any(s not in STAGES for s in perceptual_stages):
            raise ValueError(f"perceptual_stages must be a non-empty subset of {STAGES}, got {list(perceptual_stages)}")

        channels = tuple(int(c) for c in channels)
        self.autoencoder = AutoencoderKL(
            spatial_dims=3, in_channels=1, out_channels=1, channels=channels, latent_channels=latent_channels,
            num_res_blocks=num_res_blocks, norm_num_groups=norm_num_groups,
            attention_levels=(False,) * (len(channels) - 1) + (bool(attention),),
            with_encoder_nonlocal_attn=bool(attention), with_decoder_nonlocal_attn=bool(attention),
        )  # fmt: skip
        self.discriminator = (
            PatchDiscriminator(spatial_dims=3, num_layers_d=2, channels=disc_channels, in_channels=1, out_channels=1)
            if adv_weight > 0 else None
        )  # fmt: skip
        self.kl_weight, self.adv_weight, self.adv_start = kl_weight, adv_weight, adv_start
        self.lr, self.disc_lr = lr, disc_lr
        self.perceptual_weight, self.perceptual_network = float(perceptual_weight), perceptual_network
        self.perceptual_weights_path, self.perceptual_state_dict_key = (
            perceptual_weights_path,
            perceptual_state_dict_key,
        )
        self.perceptual_stages = tuple(perceptual_stages)
        # Built lazily (training only) and kept out of the module tree: not saved, not optimised, not moved by hand.
        object.__setattr__(self, "_perceptual", None)
        self.downsample = 2 ** (len(channels) - 1)
        self.register_buffer("scale_factor", torch.ones(()))
        self.automatic_optimization = False

    # ------------------------------------------------------------------ model API
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior ``(μ, σ)``, each ``[B, latent_channels, D/f, H/f, W/f]``."""
        return self.autoencoder.encode(x)

    def decode(
        self, z: Tensor, window: int | Sequence[int] | None = None, overlap: float = 0.25, mode: str = "gaussian",
        sw_batch_size: int = 1,
    ) -> Tensor:  # fmt: skip
        """Latent (unscaled) → volume ``[B, 1, D, H, W]``; with ``window``, decoded in overlapping latent windows.

        Sliding-window decoding (MONAI ``SlidingWindowInferer`` on the latent grid; each window is decoded to a
        ``downsample``× larger image patch and the patches are blended) bounds the decoder's activation memory by the
        window instead of the volume. It is close to, not equal to, the full decode: a window's border voxels see
        zero padding where the full decode sees their neighbours, and GroupNorm normalises each window with its own
        statistics. Overlap with Gaussian blending down-weights the window borders (the first error); the second
        shrinks as windows grow. A window that covers the whole latent grid gives the full decode exactly.

        Args:
            z: unscaled latents ``[B, C, d, h, w]``.
            window: latent window size (one int or one per axis); None = decode all at once. Clipped to the grid.
            overlap: fraction of the window shared by neighbouring windows, in [0, 1).
            mode: blending of overlapping patches, ``"gaussian"`` or ``"constant"``.
            sw_batch_size: windows decoded per decoder call.
        """
        if window is None:
            return self.autoencoder.decode(z)
        roi = _decode_window(window, tuple(z.shape[2:]))
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"decode overlap must be in [0, 1), got {overlap}")
        if mode not in ("gaussian", "constant"):
            raise ValueError(f"decode blending mode must be 'gaussian' or 'constant', got {mode!r}")
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        if roi == tuple(z.shape[2:]):
            return self.autoencoder.decode(z)
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                       mode=mode, progress=False)  # fmt: skip
        return inferer(z, self.autoencoder.decode)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean."""
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def estimate_scale_factor(self, volumes: Tensor, batch_size: int = 16) -> float:
        """Set ``scale_factor = 1 / std`` of the posterior means over all of ``volumes`` (not one batch)."""
        was = self.training
        self.eval()
        mus = [self.encode(volumes[i : i + batch_size].to(self.device))[0].float().cpu()
               for i in range(0, len(volumes), batch_size)]  # fmt: skip
        self.train(was)
        std = torch.cat(mus).std()
        self.scale_factor.fill_(float(1.0 / std.clamp_min(1e-8)))
        return float(self.scale_factor)

    @torch.no_grad()
    def encode_latents(self, volumes: Tensor, batch_size: int = 16) -> tuple[Tensor, Tensor]:
        """Cache-ready latents: ``(μ · scale_factor, σ · scale_factor)`` — the mean, never a sample."""
        was = self.training
        self.eval()
        out = [self.encode(volumes[i : i + batch_size].to(self.device)) for i in range(0, len(volumes), batch_size)]
        self.train(was)
        s = self.scale_factor
        return torch.cat([m for m, _ in out]).cpu() * s.cpu(), torch.cat([v for _, v in out]).cpu() * s.cpu()

    # ------------------------------------------------------------------ training
    def lightning_steps(self, generator_steps: int) -> int:
        """Lightning ``max_steps`` for ``generator_steps`` batches: in manual optimisation Lightning counts every
        optimiser step, so each batch from ``adv_start`` on (generator + discriminator) counts twice."""
        if self.discriminator is None or generator_steps <= self.adv_start:
            return generator_steps
        return self.adv_start + 2 * (generator_steps - self.adv_start)

    def configure_optimizers(self) -> Any:
        opts = [torch.optim.Adam(self.autoencoder.parameters(), lr=self.lr)]
        if self.discriminator is not None:
            opts.append(torch.optim.Adam(self.discriminator.parameters(), lr=self.disc_lr))
        return opts

    @property
    def perceptual(self) -> Any:
        """The frozen perceptual network (built from the local weights file on first use), or None when off."""
        if self.perceptual_weight <= 0:
            return None
        if self._perceptual is None:
            from vlp_ct3d.perceptual import PerceptualLoss3d

            net = PerceptualLoss3d(self.perceptual_network, self.perceptual_weights_path,
                                   self.perceptual_state_dict_key, self.perceptual_stages)  # fmt: skip
            object.__setattr__(self, "_perceptual", net)
        p = next(self.autoencoder.parameters())
        if next(self._perceptual.parameters()).device != p.device:
            self._perceptual.to(p.device)
        return self._perceptual

    def on_fit_start(self) -> None:
        self.perceptual  # noqa: B018 — fail before the first step if the weights file is missing or does not fit

    def generator_loss(self, x: Tensor, use_adv: bool) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        recon, mu, sigma = self.autoencoder(x)
        l1 = F.l1_loss(recon, x)
        kl = kl_divergence(mu, sigma)
        loss = l1 + self.kl_weight * kl
        logs = {"l1": l1.detach(), "kl": kl.detach()}
        if self.perceptual is not None:
            perc = self.perceptual(recon, x)
            loss = loss + self.perceptual_weight * perc
            logs["perceptual"] = perc.detach()
        if use_adv:
            logits = self.discriminator(recon)[-1]
            adv = F.mse_loss(logits, torch.ones_like(logits))
            loss = loss + self.adv_weight * adv
            logs["adv_g"] = adv.detach()
        return loss, logs, recon

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        x = batch["image"]
        opts = self.optimizers()
        opt_g = opts[0] if isinstance(opts, (list, tuple)) else opts
        use_adv = self.discriminator is not None and self.global_step >= self.adv_start
        loss, logs, recon = self.generator_loss(x, use_adv)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"VAE loss is {loss.item()} at step {self.global_step}; lower the learning rate")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        if use_adv:
            opt_d = opts[1]
            real = self.discriminator(x)[-1]
            fake = self.discriminator(recon.detach())[-1]
            d_loss = 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            logs["adv_d"] = d_loss.detach()
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=x.shape[0])
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=x.shape[0])
        return loss.detach()


def make_scheduler(kind: str = "rflow", num_train_timesteps: int = 1000, **kwargs: Any) -> Any:
    """A MONAI noise scheduler, separate from the model (diffusers style).

    ``ddpm`` / ``ddim``: ε-prediction, ``clip_sample=False`` (x₀ is a latent, not an image in [−1, 1]),
    scaled-linear β 0.0015 → 0.0195 (MAISI). ``rflow``: rectified flow, v = x₀ − ε, continuous timesteps.
    """
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

    if kind == "ddpm":
        return DDPMScheduler(num_train_timesteps, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195,
                             clip_sample=False, **kwargs)  # fmt: skip
    if kind == "ddim":
        return DDIMScheduler(num_train_timesteps, schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0195,
                             clip_sample=False, **kwargs)  # fmt: skip
    if kind == "rflow":
        return RFlowScheduler(num_train_timesteps, use_discrete_timesteps=False, sample_method="uniform", **kwargs)
    raise ValueError(f"scheduler must be one of {SAMPLERS}, got {kind!r}")


class LatentDiffusionModule(Configurable, VlpModule):
    """Text-conditioned latent diffusion: MONAI ``DiffusionModelUNet(spatial_dims=3)`` with cross-attention over a
    text token sequence ``[B, L, context_dim]``.

    Args:
        latent_channels: latent channels (the VAE's).
        latent_shape: latent grid (D, H, W).
        context_dim: width of the conditioning tokens (the CLIP text tower's embedding width).
        context_length: number of conditioning tokens L.
        channels: UNet widths per level.
        attention_levels: levels with (self + cross) attention blocks.
        num_res_blocks: residual blocks per level.
        num_head_channels: attention head width.
        norm_num_groups: GroupNorm groups.
        objective: ``"eps"`` (DDPM training; sample with DDPM or DDIM) or ``"rflow"`` (rectified flow, v-target).
        num_train_timesteps: training timesteps.
        cond_drop: probability of replacing the condition by the null condition (zeros) in training.
        ema_decay: EMA decay of the sampling copy.
        lr: AdamW learning rate.
        weight_decay: AdamW decay.
        geometry: output geometry for decoding to NIfTI: ``{"spacing", "size", "hu_window", "out_range"}``.

    Batches: ``{"latent": [B, C, d, h, w]`` (scaled posterior means), ``"context": [B, L, E]}``.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        latent_shape: Sequence[int] = (8, 8, 8),
        context_dim: int = 128,
        context_length: int = 64,
        channels: Sequence[int] = (32, 64),
        attention_levels: Sequence[bool] = (False, True),
        num_res_blocks: int = 1,
        num_head_channels: int = 16,
        norm_num_groups: int = 8,
        objective: str = "rflow",
        num_train_timesteps: int = 1000,
        cond_drop: float = 0.1,
        ema_decay: float = 0.999,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        geometry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        if objective not in ("eps", "rflow"):
            raise ValueError(f"objective must be 'eps' or 'rflow', got {objective!r}")
        self.unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=latent_channels, out_channels=latent_channels, channels=tuple(channels),
            attention_levels=tuple(bool(a) for a in attention_levels), num_res_blocks=num_res_blocks,
            num_head_channels=num_head_channels, norm_num_groups=norm_num_groups, with_conditioning=True,
            cross_attention_dim=context_dim, transformer_num_layers=1, use_flash_attention=False,
        )  # fmt: skip
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.latent_channels, self.latent_shape = latent_channels, tuple(int(s) for s in latent_shape)
        self.context_dim, self.context_length = context_dim, context_length
        self.objective, self.num_train_timesteps = objective, num_train_timesteps
        self.cond_drop, self.ema_decay, self.lr, self.weight_decay = cond_drop, ema_decay, lr, weight_decay
        self.geometry = dict(geometry or {})
        # MONAI schedulers are nn.Modules whose RFlow variant skips nn.Module.__init__: keep it out of the module tree.
        object.__setattr__(
            self, "train_scheduler", make_scheduler("rflow" if objective == "rflow" else "ddpm", num_train_timesteps)
        )

    def null_context(self, batch_size: int, device: Any = None) -> Tensor:
        """The one null condition (all-zero tokens), used for condition dropout and the unconditional CFG branch."""
        return torch.zeros(batch_size, self.context_length, self.context_dim, device=device or self.device)

    def _check_context(self, context: Tensor) -> None:
        if context.ndim != 3 or tuple(context.shape[1:]) != (self.context_length, self.context_dim):
            raise ValueError(
                f"context must be [B, {self.context_length}, {self.context_dim}] text tokens, got {tuple(context.shape)}"
            )

    def diffusion_loss(self, latent: Tensor, context: Tensor) -> Tensor:
        """MSE between the UNet output and the objective's target at random timesteps (with condition dropout)."""
        self._check_context(context)
        b = latent.shape[0]
        if self.training and self.cond_drop > 0:
            drop = torch.rand(b, device=latent.device) < self.cond_drop
            context = torch.where(drop[:, None, None], self.null_context(b, latent.device), context)
        noise = torch.randn_like(latent)
        if self.objective == "rflow":
            t = self.train_scheduler.sample_timesteps(latent)
            noisy = self.train_scheduler.add_noise(latent, noise, t)
            target = latent - noise
        else:
            t = torch.randint(0, self.num_train_timesteps, (b,), device=latent.device)
            noisy = self.train_scheduler.add_noise(latent, noise, t)
            target = noise
        return F.mse_loss(self.unet(noisy, t, context=context).float(), target.float())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch["latent"], batch["context"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"diffusion loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["latent"].shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # The EMA follows each optimiser step here, not in on_train_batch_end: Lightning runs the callbacks' batch-end
        # hooks (ModelCheckpoint) before the module's, so a checkpoint would miss the step's EMA update and a resumed
        # run would differ from one that never stopped.
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            # Warm-up of the decay (as in timm's ModelEmaV3) so that a short run's EMA is not mostly the init.
            d = min(self.ema_decay, (1 + self.global_step) / (10 + self.global_step))
            for e, p in zip(self.ema.parameters(), self.unet.parameters()):
                e.lerp_(p.detach(), 1 - d)
            for e, p in zip(self.ema.buffers(), self.unet.buffers()):
                e.copy_(p)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.unet.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @torch.no_grad()
    def sample(
        self,
        context: Tensor,
        guidance: float = 3.0,
        steps: int = 30,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        """Sample scaled latents ``[B, C, d, h, w]`` with classifier-free guidance ``u + w (c − u)``.

        Args:
            context: text tokens ``[B, L, E]``.
            guidance: CFG weight w (1 = conditional only, no unconditional pass).
            steps: sampling steps.
            sampler: ``"rflow"`` (for ``objective="rflow"``), ``"ddpm"`` or ``"ddim"`` (for ``"eps"``);
                default: rflow / ddim.
            generator: RNG of the initial noise (and DDPM's noise).
            use_ema: sample with the EMA weights.
        """
        self._check_context(context)
        sampler = sampler or ("rflow" if self.objective == "rflow" else "ddim")
        if (sampler == "rflow") != (self.objective == "rflow"):
            raise ValueError(f"a model trained with objective={self.objective!r} cannot sample with {sampler!r}")
        net = self.ema if use_ema else self.unet
        net.eval()
        b, device = context.shape[0], context.device
        sched = make_scheduler(sampler, self.num_train_timesteps)
        if sampler == "rflow":
            sched.set_timesteps(steps, device=device, input_img_size_numel=int(np.prod(self.latent_shape)))
        else:
            sched.set_timesteps(steps, device=device)
        x = torch.randn(b, self.latent_channels, *self.latent_shape, generator=generator, device="cpu").to(device)
        null = self.null_context(b, device)
        ts = list(sched.timesteps)
        for i, t in enumerate(ts):
            tt = torch.full((b,), float(t), device=device)
            if guidance == 1.0:
                out = net(x, tt, context=context)
            else:
                u, c = net(torch.cat([x, x]), torch.cat([tt, tt]), context=torch.cat([null, context])).chunk(2)
                out = u + guidance * (c - u)
            if sampler == "rflow":
                nxt = float(ts[i + 1]) if i + 1 < len(ts) else 0.0
                x, _ = sched.step(out, float(t), x, nxt)
            elif sampler == "ddpm":
                x, _ = sched.step(out, int(t), x, generator=generator)
            else:
                x, _ = sched.step(out, int(t), x)
        return x
