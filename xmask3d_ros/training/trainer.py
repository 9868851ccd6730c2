"""Config-driven trainer (reference-notes §1.14-1.15): AdamW in two groups, per-iteration
cosine decay to 0, losses switched on at their epochs, seeded, optional AMP (CUDA) and
gradient clipping, safetensors checkpoints with exact resume, metrics CSV, periodic evaluation.

Checkpoint ``<out_dir>/checkpoints/epoch_<E>/``: ``config.yaml`` + ``model.safetensors``
(:func:`~xmask3d_ros.model.build.save_pretrained`), ``optimizer.safetensors`` (AdamW moment
tensors and the torch RNG state) and ``state.json`` (epoch, iteration, optimiser
hyper-parameters, scheduler position, losses so far). Nothing is pickled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xmask3d_ros.config.model import ModelConfig
from xmask3d_ros.config.paths import resolve_model_config
from xmask3d_ros.config.schema import load_config, save_config
from xmask3d_ros.config.training import TrainCfg
from xmask3d_ros.model.build import build_model, load_weights, save_pretrained
from xmask3d_ros.model.xmask3d import XMask3D
from xmask3d_ros.training.batch import collate_views
from xmask3d_ros.training.views import ViewDataset

__all__ = ["Trainer", "latest_checkpoint", "load_model_config", "resolve_device"]

OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model_config(cfg: TrainCfg) -> ModelConfig:
    return load_config(ModelConfig, resolve_model_config(cfg.model_config), cfg.model_overrides)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/epoch_<E>`` folder with a complete ``state.json``."""
    folders = [p for p in (Path(out_dir) / "checkpoints").glob("epoch_*")
               if (p / STATE_FILE).is_file() and p.name[6:].isdigit()]
    return max(folders, key=lambda p: int(p.name[6:])) if folders else None


def balanced_class_weights(counts: np.ndarray, power: float) -> torch.Tensor:
    """(C + 1,) CE weights ``count^-power`` over the C base classes, mean 1 over the classes
    present (absent ones weigh 1), and 1 for the null column (its points are ignored)."""
    c = np.asarray(counts, dtype=np.float64)
    w = np.ones(len(c) + 1)
    present = c > 0
    if present.any():
        raw = c[present] ** -power
        w[:-1][present] = raw / raw.mean()
    return torch.tensor(w, dtype=torch.float32)


def cosine_factor(iteration: int, total: int) -> float:
    """lr multiplier of ``cosine_learning_rate`` (util/util.py): 0.5 (1 + cos(pi t / T))."""
    return 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / max(total, 1)))


class Trainer:
    """Trains ``model`` on ``train_set``; ``fit()`` resumes from ``resume`` when given."""

    def __init__(self, cfg: TrainCfg, *, model: XMask3D | None = None,
                 train_set: ViewDataset | None = None, val_set: ViewDataset | None = None,
                 evaluate: Callable[[XMask3D, int], dict[str, float]] | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model_cfg = load_model_config(cfg) if model is None else model.cfg
        self.model = (model or build_model(self.model_cfg, seed=cfg.seed)).to(self.device)
        self.train_set = train_set or ViewDataset(cfg.data, cfg.data.train_split, seed=cfg.seed)
        self.partition = self.train_set.partition
        base = self.partition.base_names_ordered()
        if self.model.cfg.binary.base_classes != base:  # saved with the weights: map queries
            # need to know which labels the model was trained on (ClassRule)
            self.model.cfg = dataclasses.replace(self.model.cfg, binary=dataclasses.replace(
                self.model.cfg.binary, base_classes=base))
            self.model_cfg = self.model.cfg
        self.val_set = val_set
        self.evaluate_fn = evaluate
        groups = self.model.param_groups(cfg.lr_3d, cfg.lr_others)
        for g in groups:
            g["initial_lr"] = g["lr"]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr_others, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        n = len(self.train_set)
        self.iters_per_epoch = math.ceil(n / cfg.batch_size)
        if cfg.max_iters_per_epoch:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.max_iters_per_epoch)
        self.total_iters = self.iters_per_epoch * cfg.epochs
        self.epoch = 0  # epochs completed
        self.iteration = 0  # iterations completed
        self.history: list[dict[str, float]] = []
        with torch.no_grad():
            self.text = self.model.text_embeddings(self.partition.base_names_ordered())
        if self.model_cfg.loss.ce_3d_balance > 0:
            self.model.criterion.class_weights = balanced_class_weights(
                self.train_set.base_label_counts(), self.model_cfg.loss.ce_3d_balance)
        self.out_dir = Path(cfg.out_dir)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    # ---- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        folder = self.out_dir / "checkpoints" / f"epoch_{self.epoch}"
        save_pretrained(self.model, folder)
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        index = {id(p): i for i, p in enumerate(
            p for g in self.optimizer.param_groups for p in g["params"])}
        for p, st in self.optimizer.state.items():
            for k, v in st.items():
                tensors[f"state.{index[id(p)]}.{k}"] = v.detach().cpu().contiguous().clone()
        save_file(tensors, str(folder / OPTIM_FILE))
        state = {
            "epoch": self.epoch, "iteration": self.iteration, "total_iters": self.total_iters,
            "groups": [{k: v for k, v in g.items() if k != "params"}
                       for g in self.optimizer.param_groups],
            "scaler": self.scaler.state_dict() if self.amp else None,
            "history": self.history,
        }
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        save_config(self.cfg, folder / "train.yaml")
        if self.cfg.keep_checkpoints:
            old = sorted((p for p in folder.parent.glob("epoch_*") if p.name[6:].isdigit()),
                         key=lambda p: int(p.name[6:]))[: -self.cfg.keep_checkpoints]
            for stale in old:
                shutil.rmtree(stale, ignore_errors=True)
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        from safetensors.torch import load_file

        folder = Path(folder)
        load_weights(self.model, folder)
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        if state["total_iters"] != self.total_iters:
            raise ValueError(f"{folder}: checkpoint schedule has {state['total_iters']} "
                             f"iterations, this config {self.total_iters}: resume needs the same "
                             "epochs, batch_size and data")
        tensors = load_file(str(folder / OPTIM_FILE))
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.optimizer.state.clear()
        for key, v in tensors.items():
            if key.startswith("state."):
                _, i, k = key.split(".", 2)
                # AdamW keeps "step" on the CPU unless capturable/fused
                self.optimizer.state[params[int(i)]][k] = v if k == "step" else v.to(self.device)
        for g, saved in zip(self.optimizer.param_groups, state["groups"]):
            for k, v in saved.items():
                g[k] = tuple(v) if isinstance(v, list) else v
        torch.set_rng_state(tensors["rng.torch"])
        if self.amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.history = list(state["history"])

    # ---- training -------------------------------------------------------------------------

    def _set_lr(self) -> None:
        f = cosine_factor(self.iteration, self.total_iters)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def train_step(self, indices: list[int], epoch: int) -> dict[str, float]:
        """One iteration on the samples ``indices`` of ``epoch``; returns the float losses."""
        views = [self.train_set.sample(i, epoch) for i in indices]
        batch = collate_views(views, self.partition)
        self.model.train()
        self._set_lr()
        # every random draw of the step (diffusion noise, point sampling of the losses) is
        # seeded by (seed, iteration): a resumed run repeats the straight run exactly
        step_seed = self.cfg.seed * 1_000_003 + self.iteration
        torch.manual_seed(step_seed)
        gen = torch.Generator().manual_seed(step_seed)
        with torch.autocast(self.device.type, enabled=self.amp):
            out = self.model(batch, self.text, epoch=epoch)
            losses = self.model.losses(out, epoch=epoch, generator=gen)
            total = torch.stack([v.float() for v in losses.values()]).sum()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()  # type: ignore[no-untyped-call]
        if self.cfg.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]],
                self.cfg.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        row = {"epoch": float(epoch), "iteration": float(self.iteration),
               "lr_3d": self.optimizer.param_groups[0]["lr"], "loss": float(total.detach())}
        row.update({k: float(v.detach()) for k, v in losses.items()})
        self.iteration += 1
        return row

    def _log(self, row: dict[str, float], name: str = "metrics.csv") -> None:
        """Append ``row``; a column seen for the first time (a loss switched on at a later
        epoch) rewrites the file once with the wider header, earlier rows left empty there."""
        path = self.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        header: list[str] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
        if header and not set(row) <= set(header):
            with path.open(newline="", encoding="utf-8") as f:
                old_rows = list(csv.DictReader(f))
            header += [k for k in row if k not in header]
            tmp = path.with_suffix(path.suffix + ".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=header)
                w.writeheader()
                w.writerows(old_rows)
            tmp.replace(path)
        with path.open("a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header or list(row))
            if not header:
                w.writeheader()
            w.writerow(row)

    def fit(self, *, resume: str | Path | None = None, stop_epoch: int | None = None
            ) -> list[dict[str, float]]:
        """Train to ``cfg.epochs`` (or ``stop_epoch``); returns the per-iteration log."""
        if resume is not None:
            self.load_checkpoint(resume)
        cfg = self.cfg
        end = cfg.epochs if stop_epoch is None else min(stop_epoch, cfg.epochs)
        n = len(self.train_set)
        while self.epoch < end:
            epoch = self.epoch
            order = np.random.default_rng((cfg.seed, epoch, 7)).permutation(n).tolist()
            start = time.perf_counter()
            for it in range(self.iters_per_epoch):
                chunk = order[it * cfg.batch_size:(it + 1) * cfg.batch_size]
                if not chunk:
                    break
                row = self.train_step(chunk, epoch)
                row["seconds"] = time.perf_counter() - start
                self.history.append(row)
                self._log(row)
                if cfg.progress:
                    print(f"\repoch {epoch + 1}/{cfg.epochs} it {it + 1}/{self.iters_per_epoch} "
                          f"loss {row['loss']:.4f} ({row['seconds']:.1f} s)", end="",
                          file=sys.stderr, flush=True)
            if cfg.progress:
                print(file=sys.stderr)
            self.epoch += 1
            if self.epoch % cfg.checkpoint_every_epochs == 0 or self.epoch == cfg.epochs:
                self.save_checkpoint()
            if (cfg.eval_every_epochs and self.evaluate_fn is not None
                    and self.epoch % cfg.eval_every_epochs == 0):
                metrics = self.evaluate_fn(self.model, self.epoch)
                self._log({"epoch": float(self.epoch), **metrics}, "eval.csv")
        return self.history
