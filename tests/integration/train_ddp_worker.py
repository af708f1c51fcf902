"""One training iteration, run by tests/integration/test_train_ddp.py under `torchrun` (2
processes, gloo) and as a plain process; records the summed gradient of every optimiser step.

Usage: python train_ddp_worker.py DATA.zip OUT.pt PER_DEVICE_BATCH
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from train.config import train_config_from_mapping
from train.data import open_dataset
from train.dist import init_distributed, shutdown
from train.loop import RunPaths, Trainer
from train.synthetic import tiny_config


def main() -> None:
    torch.set_num_threads(1)
    data, out, per_device = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    env = init_distributed("cpu")
    # StyleGAN2 (no batch norm) with every per-sample random quantity in play: ADA at p=0.5,
    # style mixing, noise inputs, minibatch-stddev groups of 2, an R1 step in the iteration.
    cfg = train_config_from_mapping(tiny_config(
        "stylegan2", batch=8, batch_per_device=per_device,
        ada={"target": None, "p_init": 0.5}, stylegan2={"r1_interval": 1}))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, open_dataset(data), RunPaths(Path(tmp)), env, print,
                          metrics=False)
        steps: list[dict[str, torch.Tensor]] = []
        for name, module, opt in (("D", trainer.D, trainer.opt_D), ("G", trainer.G, trainer.opt_G)):
            step = opt.step

            def recording(*args, _step=step, _module=module, _name=name, **kwargs):
                steps.append({f"{_name}.{k}": p.grad.detach().clone()
                              for k, p in _module.named_parameters() if p.grad is not None})
                return _step(*args, **kwargs)

            opt.step = recording  # type: ignore[method-assign]
        trainer.start_loader()
        trainer.iteration()
        if env.is_main:
            torch.save({"steps": steps, "world": env.world, "accum": trainer.plan.accum,
                        "G": trainer.G.state_dict(), "w_avg": trainer.G.w_avg.clone()}, out)
    shutdown(env)


if __name__ == "__main__":
    main()
