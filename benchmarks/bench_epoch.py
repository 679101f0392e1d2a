"""Seconds per training epoch: the product's Lightning path against a bare loop and the common one.

Three ways to train the same circuit for one epoch of the 50k Fashion-MNIST training images in
batches of 256:

- ``product``: ``CircuitModule`` and ``FashionMNISTDataModule`` under the Trainer that
  ``ei_lightning.train.build_trainer`` builds from the composed Hydra config (``SignConstraint``,
  ``EpochSummary``, ``ModelCheckpoint``, ``CSVLogger``), with validation switched off;
- ``bare``: the same circuit in a hand-written PyTorch loop over the same uint8 tensors, with Adam
  and the sign projection after each step and nothing else: the cost of the work itself;
- ``common``: that loop fed by torchvision's ``FashionMNIST`` and ``ToTensor`` through a
  ``DataLoader`` (no workers), the way most tutorials load the data.

What is timed. Each product epoch is a fresh one-epoch ``fit`` (a new Trainer, the same module),
clocked from the ``on_train_epoch_start`` hook to the ``on_train_epoch_end`` hook. That span holds
every training step with its logging, metrics, finiteness check and sign projection, and the
epoch's shuffle, which a run pays once per epoch. It leaves out the per-fit setup and the
checkpoint that ``ModelCheckpoint`` writes after the epoch, which a ten-epoch run pays once and
once per epoch respectively; the rest of the fit's wall time is reported apart as
``fit_overhead_s`` so that neither is hidden. Bare and common epochs are clocked around the whole
loop. On CUDA every clock reading follows a device synchronisation.

The variants run round-robin in one process, one warm-up round and then ``--epochs`` measured
rounds, so that drift of the machine (another job, clock changes) hits them all alike; the table
gives the median over the measured rounds. The floor is one epoch's matrix arithmetic over the
measured float32 matmul rate: per Linear weight and sample, 2 FLOPs forward, 2 for the weight
gradient and 2 for the input gradient, which the layers reading pixels do not need. BatchNorm,
ReLU and Adam are left out: they are elementwise and small beside the matmuls.

    .venv/bin/python benchmarks/bench_epoch.py                  # five circuits, 5 measured epochs
    .venv/bin/python benchmarks/bench_epoch.py --quick          # a smoke run of a few seconds
    .venv/bin/python benchmarks/bench_epoch.py --circuits mlp --epochs 1 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils import benchmark
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from ei_lightning.circuits import CIRCUITS, N_INPUTS, Circuit, build_circuit
from ei_lightning.datamodule import N_TRAIN_FULL, FashionMNISTDataModule, batch_bounds
from ei_lightning.fashion_mnist import FILES, IDX_MAGIC, load_fashion_mnist
from ei_lightning.lightning_module import CircuitModule
from ei_lightning.protocol import Protocol
from ei_lightning.train import CONFIG_DIR, build_trainer

log = logging.getLogger("bench_epoch")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_BATCHES = 5  # training batches per epoch under --quick
PEAK_SIDE = 2048  # square float32 matmul that sets the machine's peak rate
KINDS = ("product", "bare", "common")

# The spec's thresholds: past these the product is slower than it should be.
MAX_PRODUCT_OVER_BARE = 1.15
MIN_COMMON_OVER_PRODUCT = 2.5


class Timing(NamedTuple):
    """One epoch: the training epoch itself, and the wall time of everything the call did."""

    train_s: float
    wall_s: float


@dataclass
class Variant:
    """One way of training one circuit, and the epochs it has been timed for."""

    circuit: str
    kind: str
    run_epoch: Callable[[], Timing]
    timings: list[Timing] = field(default_factory=list)

    def median(self, overhead: bool = False) -> float:
        values = [t.wall_s - t.train_s if overhead else t.train_s for t in self.timings]
        return statistics.median(values) if values else float("nan")

    def fastest(self) -> float:
        """The least-disturbed epoch: on a shared machine, the best guess of the quiet cost."""
        return min((t.train_s for t in self.timings), default=float("nan"))


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a clock reading covers the work launched before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    circuit: Circuit, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> None:
    """One step as the product takes it: cross-entropy, Adam, then the sign projection."""
    loss = F.cross_entropy(circuit(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    circuit.signs.project_(circuit)


def timed_loop(
    circuit: Circuit,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> Timing:
    """Train over ``batches`` and return the seconds it took, batch preparation included."""
    synchronize(device)
    start = time.perf_counter()
    for images, labels in batches:
        train_step(circuit, optimizer, images.to(device), labels.to(device))

    synchronize(device)
    seconds = time.perf_counter() - start
    return Timing(seconds, seconds)


def new_circuit(
    model: dict[str, Any], optim: dict[str, Any], device: torch.device
) -> tuple[Circuit, torch.optim.Adam]:
    """The circuit and Adam with the config's settings, exactly as the product builds them."""
    torch.manual_seed(0)
    circuit = build_circuit(**model).to(device).train()
    adam = torch.optim.Adam(
        circuit.parameters(),
        lr=optim["lr"],
        betas=tuple(optim["betas"]),
        weight_decay=optim["weight_decay"],
        fused=optim["fused"],
    )
    return circuit, adam


class EpochTimer(L.Callback):
    """Seconds from the first hook of the training epoch to its last; see the module docstring."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self.start


class ProductEpoch:
    """One-epoch fits of the product, each with a fresh Trainer and job directory.

    The module and the datamodule persist across fits, as they would across the epochs of one
    run: the weights keep training and the data stays on the device.
    """

    def __init__(self, cfg: DictConfig, data: FashionMNISTDataModule, workdir: Path) -> None:
        self.cfg = cfg
        self.data = data
        self.workdir = workdir
        self.fits = 0
        torch.manual_seed(0)
        self.module = CircuitModule(
            model=OmegaConf.to_container(cfg.model, resolve=True),
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
        )

    def __call__(self) -> Timing:
        # A fresh directory per fit: the CSV logger and the checkpoint would warn about reuse.
        job_dir = self.workdir / f"{self.cfg.model.name}_fit{self.fits}"
        self.fits += 1
        timer = EpochTimer()
        protocol = Protocol(data=self.data, shuffled=self.data, callbacks=[timer])
        trainer = build_trainer(self.cfg, job_dir, protocol)

        start = time.perf_counter()
        trainer.fit(self.module, datamodule=self.data)
        return Timing(timer.seconds, time.perf_counter() - start)


class TensorEpoch:
    """The bare loop: batches cut by index from uint8 tensors already on the device."""

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        split: tuple[torch.Tensor, torch.Tensor],
        batch_size: int,
        device: torch.device,
        max_batches: int | None,
    ) -> None:
        self.circuit, self.optimizer = new_circuit(model, optim, device)
        self.images, self.labels = (t.to(device) for t in split)
        self.batch_size = batch_size
        self.device = device
        self.max_batches = max_batches

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), device=self.device)
        starts = range(0, len(self.labels), self.batch_size)
        for start in itertools.islice(starts, self.max_batches):
            index = order[start : start + self.batch_size]
            yield self.images[index].float().div_(255.0), self.labels[index]

    def __call__(self) -> Timing:
        return timed_loop(self.circuit, self.optimizer, self.batches(), self.device)


class LoaderEpoch:
    """The common loop: torchvision's per-sample dataset and ToTensor behind a DataLoader."""

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        loader: DataLoader,
        device: torch.device,
        max_batches: int | None,
    ) -> None:
        self.circuit, self.optimizer = new_circuit(model, optim, device)
        self.loader = loader
        self.device = device
        self.max_batches = max_batches

    def __call__(self) -> Timing:
        batches = itertools.islice(self.loader, self.max_batches)
        return timed_loop(self.circuit, self.optimizer, batches, self.device)


def compose_config(circuit: str, device: torch.device, max_batches: int | None) -> DictConfig:
    """The product's own config for ``circuit``, cut down to one training epoch per fit."""
    overrides = [
        f"model={circuit}",
        "progress=epoch",  # the per-epoch log line of EpochSummary, as in a sweep job
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=0",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
    ]
    if max_batches is not None:
        overrides.append(f"trainer.limit_train_batches={max_batches}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="bench"):
        return compose(config_name="train", overrides=overrides)


def train_index(data_cfg: DictConfig) -> torch.Tensor:
    """Indices of the 50k training images among the 60k, drawn as the datamodule draws them."""
    generator = torch.Generator().manual_seed(data_cfg.split_seed)
    return torch.randperm(N_TRAIN_FULL, generator=generator)[data_cfg.val_size :]


def train_split(data_cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The product's 50k training images, flat uint8, and their labels."""
    raw = load_fashion_mnist(data_cfg.root)
    index = train_index(data_cfg)
    # (50000, 28, 28) -> (50000, 784)
    images = raw["train_images"][index].reshape(len(index), -1).contiguous()
    return images, raw["train_labels"][index].long()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` as an uncompressed idx file, the form torchvision reads."""
    header = np.array([IDX_MAGIC[array.ndim], *array.shape], dtype=">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def torchvision_root(data_cfg: DictConfig, root: Path) -> Path:
    """Lay the verified arrays out as ``<root>/FashionMNIST/raw/<idx files>``.

    torchvision's ``FashionMNIST`` accepts a root once its raw folder holds all four files
    under their uncompressed names; it cannot download here, and Debian ships them gzipped.
    """
    raw_dir = root / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for key, array in load_fashion_mnist(data_cfg.root).items():
        write_idx(raw_dir / FILES[key][0], array.numpy())
    return root


def common_loader(data_cfg: DictConfig, root: Path) -> DataLoader:
    """torchvision's dataset over the product's 50k training images, batch 256, reshuffled."""
    dataset = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    subset = Subset(dataset, train_index(data_cfg).tolist())
    return DataLoader(subset, batch_size=data_cfg.batch_size, shuffle=True, num_workers=0)


@dataclass
class Plan:
    """What to measure, from the command line."""

    circuits: list[str]
    common: list[str]
    epochs: int
    device: torch.device
    max_batches: int | None  # None: the whole epoch
    threads: int | None  # None: torch's default
    results_dir: Path


def build_variants(plan: Plan, workdir: Path) -> tuple[list[Variant], DictConfig]:
    """Every variant of every circuit, in the round-robin order, and the data config they share."""
    cfgs = {name: compose_config(name, plan.device, plan.max_batches) for name in plan.circuits}
    data_cfg = next(iter(cfgs.values())).data
    # One datamodule for all circuits, so its tensors sit on the device once.
    data = FashionMNISTDataModule(**OmegaConf.to_container(data_cfg, resolve=True))
    split = train_split(data_cfg)
    loader = common_loader(data_cfg, torchvision_root(data_cfg, workdir / "torchvision"))

    variants = []
    for name, cfg in cfgs.items():
        model = OmegaConf.to_container(cfg.model, resolve=True)
        optim = OmegaConf.to_container(cfg.optim, resolve=True)
        runs = {
            "product": ProductEpoch(cfg, data, workdir / "jobs"),
            "bare": TensorEpoch(
                model, optim, split, data_cfg.batch_size, plan.device, plan.max_batches
            ),
        }
        if name in plan.common:
            runs["common"] = LoaderEpoch(model, optim, loader, plan.device, plan.max_batches)
        variants += [Variant(name, kind, run) for kind, run in runs.items()]
    return variants, data_cfg


def run_rounds(variants: list[Variant], epochs: int) -> None:
    """One warm-up epoch of every variant, then ``epochs`` measured ones, round-robin."""
    for round_ in range(epochs + 1):
        label = "warm-up" if round_ == 0 else f"{round_}/{epochs}"
        for variant in variants:
            timing = variant.run_epoch()
            if round_ > 0:
                variant.timings.append(timing)
            where = f"{label:8} {variant.circuit:13} {variant.kind:8}"
            log.info("%s %7.3f s/epoch  (%.3f s in all)", where, *timing)


def matmul_gflops(device: torch.device, m: int, k: int, n: int, min_run_time: float) -> float:
    """Measured float32 rate of an ``(m, k) @ (k, n)`` product, on every thread torch uses."""
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    timer = benchmark.Timer(
        stmt="a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads()
    )
    seconds = timer.blocked_autorange(min_run_time=min_run_time).median
    return 2 * m * k * n / seconds / 1e9


def training_flops_per_sample(circuit: Circuit) -> int:
    """Matmul FLOPs of one training sample: 6 per Linear weight, 4 where the input is pixels.

    Which layers read the pixels is found by running a batch: their input needs no gradient.
    """
    needs_input_grad: dict[nn.Linear, bool] = {}

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        needs_input_grad[layer] = inputs[0].requires_grad

    linears = [m for m in circuit.modules() if isinstance(m, nn.Linear)]
    handles = [layer.register_forward_hook(record) for layer in linears]
    device = next(circuit.parameters()).device
    circuit(torch.rand(2, N_INPUTS, device=device))
    for handle in handles:
        handle.remove()

    return sum((6 if needs_input_grad[layer] else 4) * layer.weight.numel() for layer in linears)


def summarise(
    variants: list[Variant], plan: Plan, peak_gflops: float, data_cfg: DictConfig
) -> pd.DataFrame:
    """One row per circuit: medians, their ratios, the arithmetic floor, and the fastest epochs.

    ``overhead_ms_per_step`` spreads the product's extra time over the epoch's optimizer steps:
    it is the framework's own cost per step, which a larger circuit hides and a smaller one shows.
    """
    bounds = batch_bounds(N_TRAIN_FULL - data_cfg.val_size, data_cfg.batch_size)
    bounds = bounds[: plan.max_batches]
    n_samples = bounds[-1][1]
    rows = []
    for name in plan.circuits:
        mine = {v.kind: v for v in variants if v.circuit == name}
        med = {kind: mine[kind].median() if kind in mine else float("nan") for kind in KINDS}
        flops = training_flops_per_sample(build_circuit(name)) * n_samples
        row = {"circuit": name, **{f"{kind}_s": med[kind] for kind in KINDS}}
        row["product_over_bare"] = med["product"] / med["bare"]
        row["overhead_ms_per_step"] = (med["product"] - med["bare"]) / len(bounds) * 1e3
        row["common_over_product"] = med["common"] / med["product"]
        row["floor_s"] = flops / (peak_gflops * 1e9)
        row["fit_overhead_s"] = mine["product"].median(overhead=True)
        row |= {f"{kind}_min_s": v.fastest() for kind, v in mine.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def write_results(table: pd.DataFrame, plan: Plan, rates: dict[str, float]) -> Path:
    """The table with the run's settings, timestamped and as ``latest.csv``."""
    stamped = table.assign(
        device=str(plan.device),
        threads=torch.get_num_threads(),
        epochs=plan.epochs,
        batches=plan.max_batches or "all",
        **{f"gflops_{key}": value for key, value in rates.items()},
    )
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    path = plan.results_dir / f"bench_epoch_{datetime.now():%Y%m%d-%H%M%S}.csv"
    stamped.to_csv(path, index=False, float_format="%.4f")
    stamped.to_csv(plan.results_dir / "latest.csv", index=False, float_format="%.4f")
    return path


def flag_bottlenecks(table: pd.DataFrame) -> None:
    """Name each circuit whose product path misses the spec's ratios."""
    for row in table.itertuples():
        if row.product_over_bare > MAX_PRODUCT_OVER_BARE:
            log.warning(
                "%s: product %.2fx the bare loop (limit %.2fx)",
                row.circuit,
                row.product_over_bare,
                MAX_PRODUCT_OVER_BARE,
            )
        if row.common_over_product < MIN_COMMON_OVER_PRODUCT:
            log.warning(
                "%s: the common loop is only %.2fx the product (want >= %.1fx)",
                row.circuit,
                row.common_over_product,
                MIN_COMMON_OVER_PRODUCT,
            )


def measure_rates(device: torch.device, quick: bool) -> dict[str, float]:
    """The peak float32 matmul rate, and the rate at the EP layer's own shape for comparison."""
    min_run_time = 0.2 if quick else 1.0
    return {
        "peak": matmul_gflops(device, PEAK_SIDE, PEAK_SIDE, PEAK_SIDE, min_run_time),
        "ep_layer": matmul_gflops(device, 256, 784, 512, min_run_time),
    }


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="measured epochs (default 5)")
    parser.add_argument("--circuits", default=",".join(CIRCUITS), help="comma-separated names")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BATCHES} batches/epoch")
    parser.add_argument(
        "--common-all", action="store_true", help="time the common loop for every circuit"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    return make_plan(parser, args)


def make_plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    """Check the flags and fill in their defaults."""
    circuits = [name.strip() for name in args.circuits.split(",") if name.strip()]
    unknown = sorted(set(circuits) - set(CIRCUITS))
    if unknown or not circuits:
        parser.error(f"--circuits: {unknown or 'none'} not known; choose from {list(CIRCUITS)}")
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 5)
    if epochs < 1:
        parser.error(f"--epochs={epochs} must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads={args.threads} must be at least 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device=cuda, but torch sees no CUDA device")

    # The data pipeline costs the same whatever the circuit, so one circuit shows it by default.
    common = circuits if args.common_all else ["mlp" if "mlp" in circuits else circuits[0]]
    return Plan(
        circuits=circuits,
        common=common,
        epochs=epochs,
        device=torch.device(device),
        max_batches=QUICK_BATCHES if args.quick else None,
        threads=args.threads,
        results_dir=args.results_dir,
    )


def quiet_lightning() -> None:
    """Keep Lightning's per-fit banners out of the output; only its warnings remain.

    EpochSummary's line goes through the same logger, so it is formatted but not written: a
    few microseconds per epoch, nothing the table could show.
    """
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # One-epoch fits under --quick log less often than every 20 steps, on purpose.
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    # Lightning's own use of a deprecated torch pytree API, outside this project.
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_lightning()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    log.info(
        "device %s, %d threads, %d measured epochs, %s batches per epoch",
        plan.device,
        torch.get_num_threads(),
        plan.epochs,
        plan.max_batches or "all",
    )

    rates = measure_rates(plan.device, quick=plan.max_batches is not None)
    log.info(
        "float32 matmul: %.1f GFLOP/s peak, %.1f at the EP layer's shape",
        rates["peak"],
        rates["ep_layer"],
    )
    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
        variants, data_cfg = build_variants(plan, Path(tmp))
        run_rounds(variants, plan.epochs)

    table = summarise(variants, plan, rates["peak"], data_cfg)
    log.info(
        "seconds per training epoch (median):\n%s",
        table.to_string(index=False, float_format="%.3f"),
    )
    path = write_results(table, plan, rates)
    log.info("written to %s and latest.csv", path)
    flag_bottlenecks(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
