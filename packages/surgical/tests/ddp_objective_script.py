"""Two gloo processes on CPU: run by test_ddp.py, not collected by pytest.

Each rank first computes, without a process group, the single-process reference (objective value and gradients on
the concatenated batch of all videos), then joins the group, scores only its own videos (ragged: rank 0 one video,
rank 1 two) and averages gradients as DDP does. Writes ``rank{r}.pt`` with both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def grads(model, objective) -> dict[str, torch.Tensor]:
    named = list(model.named_parameters()) + [(f"objective.{k}", v) for k, v in objective.named_parameters()]
    return {k: v.grad.detach().clone() for k, v in named if v.grad is not None}


def run(rank: int, world: int, root: str, out: str) -> None:
    from vlp_surgical.losses import ProcedureDTWLoss, nt_xent
    from vlp_surgical.models import HecVL
    from vlp_surgical.training import HecVLObjective, ProcedureCorpus, build_batch

    torch.manual_seed(0)
    items = ProcedureCorpus(root, "train").items
    model = HecVL(img_size=16, frame_dim=16, embed_dim=16).eval()  # eval: batch norm uses running statistics

    def objective():
        o = HecVLObjective(dtw_weight=1.0, retrieval_weight=0.5, retrieval_k=2,
                           dtw=ProcedureDTWLoss(negatives=("reverse",), positive_weight=0.5))  # fmt: skip
        o.refresh_bank(model, items, 0)
        return o

    ref_obj = objective()
    ref = ref_obj(model, build_batch(items))
    ref["loss"].backward()
    ref_grads = grads(model, ref_obj)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z2 = torch.randn(5, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ref_nt = nt_xent(z, z2, 0.2)
    ref_nt.backward()
    ref_nt_grads = (z.grad.clone(), z2.grad.clone())
    model.zero_grad(set_to_none=True)

    dist.init_process_group("gloo", rank=rank, world_size=world)
    obj = objective()
    mine = [items[0]] if rank == 0 else items[1:]
    res = obj(model, build_batch(mine))
    res["loss"].backward()
    g = grads(model, obj)
    for v in g.values():
        dist.all_reduce(v)
        v /= world
    loss = res["loss"].detach().clone()
    dist.all_reduce(loss)
    # NT-Xent with ragged ranks, one of them empty: rows 0..4 on rank 1, none on rank 0.
    za = z.detach().clone().requires_grad_(True)
    zb = z2.detach().clone().requires_grad_(True)
    part = slice(0, 0) if rank == 0 else slice(0, 5)
    nt = nt_xent(za[part], zb[part], 0.2)
    nt.backward()
    nt_grads = [za.grad.clone(), zb.grad.clone()]
    for v in nt_grads:  # DDP's mean over ranks, as if z were parameters
        dist.all_reduce(v)
        v /= world
    nt_loss = nt.detach().clone()
    dist.all_reduce(nt_loss)
    torch.save({"ref_loss": ref["loss"].detach(), "loss": loss / world, "ref_grads": ref_grads, "grads": g,
                "terms": sorted(k for k in res if not k.endswith("_gap")),
                "ref_terms": sorted(k for k in ref if not k.endswith("_gap")),
                "ref_nt": ref_nt.detach(), "nt": nt_loss / world, "ref_nt_grads": ref_nt_grads,
                "nt_grads": nt_grads}, Path(out) / f"rank{rank}.pt")  # fmt: skip
    dist.barrier()  # both ranks past every collective before teardown (gloo can abort at exit otherwise)
    dist.destroy_process_group()
    # Skip interpreter finalisation, where gloo's leftover work objects can still abort the process (seen in
    # vlp-core's 2-process test after a barrier); the results are saved above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    root, out, port = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.multiprocessing.spawn(run, args=(2, root, out), nprocs=2, join=True)
