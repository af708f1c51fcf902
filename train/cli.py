"""The `train` command line. Training itself (`train fit`) lands with the train stage; `train env`
answers the first question of anyone about to launch a multi-GPU run: what will torch see here?"""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Train GANs on the datasets `curate prepare` exports (data/datasets/NAME.zip).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

#: Variables torchrun sets for each worker; shown so a misconfigured launch is visible at once.
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_report() -> dict[str, object]:
    """Torch build, accelerators and distributed backends available in this process."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda or "none (CPU build)",
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
        "cpu_threads": torch.get_num_threads(),
        "backends": [name for name, ok in (("nccl", dist.is_nccl_available()),
                                           ("gloo", dist.is_gloo_available()),
                                           ("mpi", dist.is_mpi_available())) if ok],
        "launcher": {k: os.environ[k] for k in LAUNCH_VARS if k in os.environ} or "none",
    }


@app.command("env")
def env() -> None:
    """Print the torch build, GPUs, distributed backends and torchrun variables of this machine."""
    table = Table(title="train: environment", show_header=False)
    for key, value in environment_report().items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        table.add_row(key, shown or "none")
    console.print(table)


@app.callback()
def main() -> None:
    """GAN training stage of the pipeline."""
