"""The training loop: gradient accumulation, bf16 autocast, EMA, periodic atomic checkpoints and exact resume."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path
from kvideo.errors import CheckpointError, KVideoError, OutputError, TrainingDivergedError
from kvideo.train import checkpointing as ckpt
from kvideo.train import distributed
from kvideo.train.config import TrainConfig, check_finite, check_inputs
from kvideo.train.data import StreamSampler
from kvideo.train.seeding import rng_state, seeded_generator, set_rng_state
from kvideo.train.task import Task
from kvideo.train.tasks import build_task
from kvideo.train.tracking import TrainLog, peak_memory_gb, read_log


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    step: int
    weights: Path  # the trained weights to use (EMA weights when the EMA is on)
    last_loss: float  # the last step's (a finished run resumed: the last loss in its log)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP-sharded DTensor (a collective), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class EMA:
    """Exponential moving average of the trained parameters: shadow <- d·shadow + (1 - d)·param.

    Given the optimizer step n, d = min(decay, (1 + n) / (10 + n)) (the usual warm-up): with a fixed
    0.999 a 600-step run would export weights that still hold 55 % of their initial values, and
    zero-initialised layers (every temporal layer of an inflated UNet) would come out at half strength.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.shadow = {name: p.detach().clone().float() for name, p in params.items()}

    def decay_at(self, step: int | None) -> float:
        """The decay of the update after optimizer step `step` (1, 2, ...; None: the fixed decay)."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter], step: int | None = None) -> None:
        weight = 1.0 - self.decay_at(step)
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach().float(), weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: full_tensor(t).cpu() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in self.shadow.items():
            if hasattr(tensor, "full_tensor"):  # FSDP: keep this rank's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor  # FSDP only (seconds to import)

                tensor.copy_(distribute_tensor(state[name].to(tensor.device), tensor.device_mesh, tensor.placements))
            else:
                tensor.copy_(state[name])


class Trainer:
    """Fine-tunes one task under torchrun (or in one process). Everything that can be wrong with the
    inputs (data, model, resume checkpoint) raises before the first step."""

    def __init__(self, cfg: TrainConfig, env: distributed.DistEnv, *, overwrite: bool = False) -> None:
        self.cfg, self.env, self.overwrite = cfg, env, overwrite
        check_finite(cfg)
        self.output_dir = Path(cfg.output_dir)
        self._check_output_dir()
        self.task: Task = build_task(cfg)
        self.cfg = cfg = self._fit_batch_to_data(cfg)
        if cfg.caption_pattern:
            subset = self.task.dataset
            _on_main(env)(f"kvideo train: {len(subset)} of {len(subset.dataset)} samples match "
                          f"caption_pattern={cfg.caption_pattern!r}")
        self.trained_keys = _trained_keys(self.task, cfg.train)
        self.info = ckpt.WeightsInfo(self.task.model.model_type, self.task.model.config.to_json(), cfg.task,
                                     cfg.trained_weights, 0)
        restored = ckpt.restore(self.output_dir, cfg.resume, model=self.task.model, task=cfg.task,
                                weights=cfg.trained_weights, ema=bool(cfg.ema_decay),
                                report=_on_main(env))
        if restored is not None:
            restored.load_weights(self.task.model)
        self.task.model.to(env.device)
        self.module = distributed.wrap_model(self.task.module, env, cfg.strategy, self.task.shard_types)
        self.params = {n: p for n, p in self.task.model.named_parameters() if p.requires_grad}
        self.optimizer = distributed.make_optimizer(
            self.params.values(), env, zero=cfg.zero, strategy=cfg.strategy, lr=cfg.lr, betas=cfg.adam_betas,
            eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.ema = EMA(self.params, cfg.ema_decay) if cfg.ema_decay else None
        self.step = 0
        if restored is not None:
            self._restore(restored)
        self.log: TrainLog | None = None  # opened by `run`, once the run folder is ready

    # -- setup ---------------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        """An optional linear warm-up, then a constant learning rate or a cosine decay to `min_lr_ratio`."""
        return lr_factor(step, self.cfg.steps, self.cfg.warmup_steps, self.cfg.lr_schedule, self.cfg.min_lr_ratio)

    def _fit_batch_to_data(self, cfg: TrainConfig) -> TrainConfig:
        """A batch larger than the data would read every sample many times a step (4 clips and
        batch_size=100000 never finished a step): cap it at what the data holds, and say so."""
        samples = len(self.task.dataset)
        most = max(1, samples // self.env.world_size)
        if cfg.batch_size <= most:
            return cfg
        _on_main(self.env)(f"kvideo train: batch_size={cfg.batch_size} is more than the {samples} samples of the "
                           f"data{f' over {self.env.world_size} processes' if self.env.world_size > 1 else ''}; "
                           f"training with batch_size={most}")
        return dataclasses.replace(cfg, batch_size=most)

    def _check_output_dir(self) -> None:
        """Rank 0 checks the run folder (before any rank writes to it) and every rank raises what it found."""
        error = None
        if self.env.is_main:
            try:
                ckpt.check_output_dir(self.output_dir, resume=self.cfg.resume, overwrite=self.overwrite)
                if self.cfg.resume:
                    read_log(self.output_dir)  # a log it cannot continue is refused before anything is written
            except KVideoError as found:
                error = found
        error = distributed.broadcast_object(error, self.env)
        if error is not None:
            raise error

    def _restore(self, restored: ckpt.Restored) -> None:
        """The training state of a checkpoint: optimizer, scheduler, EMA, RNG and step."""
        try:
            self._load_optimizer(restored.state["optimizer"])
            self.scheduler.load_state_dict(restored.state["scheduler"])
            if self.ema is not None:
                self.ema.load_state_dict(restored.ema)
            set_rng_state(restored.state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            reason = next(iter(str(error).splitlines()), "")[:160]
            raise CheckpointError(f"resume checkpoint {str(restored.folder)!r}: its training state does not fit "
                                  f"this run ({type(error).__name__}: {reason}); resume with the settings it was "
                                  "saved with, or from another checkpoint") from None
        self.step = restored.step

    def _prepare_output_dir(self) -> None:
        """Move an old run aside (--overwrite), clear a killed run's temp files, write config.json, open the log."""
        if self.env.is_main:
            if self.overwrite and (moved := ckpt.move_aside(self.output_dir)) is not None:
                print(f"kvideo train: moved the previous run in {str(self.output_dir)!r} to {str(moved)!r}",
                      file=sys.stderr)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_temporary_files(self.output_dir)
            with atomic_path(self.output_dir / "config.json") as tmp:
                tmp.write_text(self.cfg.to_json(indent=2))
        distributed.barrier(self.env)
        self.log = TrainLog(self.output_dir, enabled=self.env.is_main, tensorboard=self.cfg.tensorboard)
        self.log.drop_after(self.step)

    # -- optimizer state across strategies -----------------------------------------------------------
    def _optimizer_state(self) -> dict[str, Any] | None:
        """The full optimizer state on rank 0 (a collective for ZeRO and FSDP); None elsewhere."""
        if distributed.is_zero(self.optimizer):
            self.optimizer.consolidate_state_dict(to=0)
            return self.optimizer.state_dict() if self.env.is_main else None
        if self.env.distributed and self.cfg.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict  # FSDP only

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = get_optimizer_state_dict(self.module, self.optimizer, options=options)
            return state if self.env.is_main else None
        return self.optimizer.state_dict() if self.env.is_main else None

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        if self.env.distributed and self.cfg.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # FSDP only

            set_optimizer_state_dict(self.module, self.optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state)

    # -- the loop ------------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from the data position of `self.step` on, moved to the device."""
        sampler = StreamSampler(len(self.task.dataset), self.cfg.batch_size, rank=self.env.rank,
                                world_size=self.env.world_size, seed=self.cfg.seed,
                                start=self.step * self.cfg.grad_accum)
        loader = torch.utils.data.DataLoader(self.task.dataset, batch_sampler=sampler, collate_fn=self.task.collate,
                                             num_workers=self.cfg.num_workers,
                                             pin_memory=self.env.device.type == "cuda")
        for batch in loader:
            yield {k: v.to(self.env.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def run(self) -> TrainResult:
        cfg = self.cfg
        self._prepare_output_dir()
        batches = self.batches()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.task}",
                   disable=not (cfg.progress and self.env.is_main))
        loss, window = float("nan"), _Window()
        try:
            while self.step < cfg.steps:
                loss = self.train_step(batches)
                self.step += 1
                window.add(loss)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(window, bar)
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
        finally:
            bar.close()
            self.log.close()
        if math.isnan(loss):  # a finished run resumed: no step ran here, its log has the last loss
            loss = next((r["loss"] for r in reversed(read_log(self.output_dir)) if "loss" in r), loss)
        return TrainResult(self.output_dir, self.step, self.export(), loss)

    def train_step(self, batches: Iterator[dict[str, Any]]) -> float:
        """One optimizer step over `grad_accum` micro-batches; returns the mean loss of this rank."""
        cfg, total = self.cfg, 0.0
        self.module.train()
        for micro in range(cfg.grad_accum):
            batch = self._next_usable(batches)
            generator = seeded_generator(cfg.seed, self.env.rank, self.step, micro)
            with self._sync(micro == cfg.grad_accum - 1):
                with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                    loss = self.task.loss(self.module, batch, generator)
                (loss / cfg.grad_accum).backward()
            total += float(loss.detach())
        self._check_loss(total / cfg.grad_accum)  # before the update: the weights stay those of the last step
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.params, self.step + 1)  # self.step counts the steps before this one
        return total / cfg.grad_accum

    def _check_loss(self, loss: float) -> None:
        """Stop at the first non-finite loss (of any rank): the updates after it would only spread it."""
        if math.isfinite(distributed.mean_over_ranks(loss, self.env)):
            return
        shown = f"{loss}" if math.isinf(loss) else "nan"
        raise TrainingDivergedError(f"loss became {shown} at step {self.step + 1}; {self._last_good()}")

    def _last_good(self) -> str:
        """Where a diverged run can be picked up: its newest checkpoint (each was checked finite when saved)."""
        hint = "a lower --lr, or --max-grad-norm 1.0"
        folder = ckpt.latest_folder(self.output_dir) if self.step else None
        if folder is not None and folder.is_dir():
            return f"the last good checkpoint is {str(folder)!r} (step {ckpt.folder_step(folder)}); try {hint}"
        return f"no checkpoint was saved before it; try {hint}"

    def _check_weights(self, state: dict[str, torch.Tensor], what: str) -> None:
        """Refuse to write non-finite weights: name the first tensor that holds nan or inf."""
        for name, tensor in state.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise TrainingDivergedError(f"the {what} became non-finite by step {self.step} (tensor {name!r} "
                                            f"holds nan or inf) and were not saved; {self._last_good()}")

    def _next_usable(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """The next batch with data in it (clips that failed to decode are dropped by the collate)."""
        for _ in range(1000):
            batch = next(batches)
            if self.task.batch_key in batch:
                return batch
        raise ValueError("1000 batches in a row had no readable clip: check the videos")

    def _sync(self, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
        if sync or not self.env.distributed:
            return contextlib.nullcontext()
        if hasattr(self.module, "no_sync"):
            return self.module.no_sync()
        return _fsdp_no_sync(self.module)

    def _log(self, window: "_Window", bar) -> None:
        values = window.flush(self.cfg.batch_size * self.cfg.grad_accum * self.env.world_size)
        values["loss"] = distributed.mean_over_ranks(values["loss"], self.env)
        values["memory_gb"] = round(distributed.max_over_ranks(peak_memory_gb(self.env.device), self.env), 3)
        values["lr"] = self.scheduler.get_last_lr()[0]
        self.log.write(self.step, values)
        bar.set_postfix(loss=f"{values['loss']:.4f}", samples_s=f"{values['samples_per_s']:.2f}")

    # -- saving --------------------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        """The trained weights as full CPU tensors (a collective under FSDP)."""
        state = self.task.model.state_dict()
        return {k: full_tensor(state[k]).detach().cpu() for k in self.trained_keys}

    def save(self) -> Path | None:
        """Write checkpoint `step` atomically (weights, EMA, optimizer / scheduler / RNG / data position)."""
        weights, optimizer = self.trained_state(), self._optimizer_state()
        ema = self.ema.state_dict() if self.ema is not None else None
        folder = None
        self._check_weights(weights, "weights")
        if ema is not None:
            self._check_weights(ema, "EMA weights")
        if self.env.is_main:
            tmp = ckpt.begin_checkpoint(self.output_dir, self.step)
            with self._writing(f"checkpoint {self.step}", ckpt.checkpoint_root(self.output_dir), tmp):
                ckpt.save_state(tmp / ckpt.STATE_FILE, {
                    "step": self.step, "optimizer": optimizer, "scheduler": self.scheduler.state_dict(),
                    "rng": rng_state(), "data": {"micro_batches": self.step * self.cfg.grad_accum},
                })
                if ema is not None:
                    self._write_weights(tmp / ckpt.EMA_FILE, ema)
                # written last, with the state's checksum: resume verifies every file of the folder
                self._write_weights(tmp / ckpt.WEIGHTS_FILE, weights,
                                    {ckpt.STATE_CHECKSUM_KEY: ckpt.file_checksum(tmp / ckpt.STATE_FILE)})
            folder = ckpt.commit_checkpoint(self.output_dir, tmp, self.step, self.cfg.keep_checkpoints)
        distributed.barrier(self.env)
        return folder

    @contextlib.contextmanager
    def _writing(self, what: str, where: Path, leftover: Path | None = None):
        """A failed write (a full disk: torch and safetensors raise their own types) as one line naming the
        folder; the half-written `leftover` is removed and the previous checkpoint stays as it was."""
        try:
            yield
        except KVideoError:
            raise
        except Exception as error:  # noqa: BLE001 (RuntimeError from torch.save, SafetensorError, OSError)
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)
            free = shutil.disk_usage(where).free / 2**20
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            latest = ckpt.latest_folder(self.output_dir)
            kept = (f"the last checkpoint, {str(latest)!r}, is intact" if latest is not None
                    else "no checkpoint before it")
            raise OutputError(f"writing {what} into {str(where)!r} failed ({reason[:160]}; {free:.0f} MiB free "
                              f"there); {kept}: free some space, then --resume latest") from None

    def _write_weights(self, path: Path, state: dict[str, torch.Tensor], more: dict[str, str] | None = None) -> None:
        info = ckpt.WeightsInfo(self.info.model_type, self.info.model_config, self.info.task, self.info.weights,
                                self.step)
        ckpt.save_weights(path, state, info, self.task.extras, self.cfg.to_json(), more)

    def export(self) -> Path:
        """`<output_dir>/<task>-<temporal|all>.safetensors`: the weights to use (EMA when kept)."""
        path = self.output_dir / f"{self.cfg.task}-{self.cfg.trained_weights}.safetensors"
        state = self.ema.state_dict() if self.ema is not None else self.trained_state()
        self._check_weights(state, "EMA weights" if self.ema is not None else "weights")
        if self.env.is_main:
            with self._writing(f"the trained weights {path.name}", self.output_dir):
                self._write_weights(path, state)
        distributed.barrier(self.env)
        return path


def lr_factor(step: int, steps: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """The learning rate of `step` as a fraction of the configured one."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _trained_keys(task: Task, train: str) -> list[str]:
    if train == "temporal":
        return list(task.model.temporal_state_dict())
    return list(task.model.state_dict())


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


class _Window:
    """Loss and throughput since the last log line."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.started = time.perf_counter()

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def flush(self, samples_per_step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        steps = len(self.losses)
        values = {"loss": sum(self.losses) / max(steps, 1), "samples_per_s": samples_per_step * steps / elapsed,
                  "step_time_s": elapsed / max(steps, 1)}
        self.losses, self.started = [], time.perf_counter()
        return values


def _on_main(env: distributed.DistEnv):
    """Print a message to stderr on the main rank only."""
    return lambda message: print(message, file=sys.stderr) if env.is_main else None


def train(cfg: TrainConfig, *, overwrite: bool = False) -> TrainResult:
    """Run `cfg` in this process: one process, or one rank of a torchrun launch. An output folder holding
    another run is refused unless `cfg.resume` continues it or `overwrite` moves it aside."""
    check_inputs(cfg)
    env = distributed.setup(cfg.device)
    try:
        return Trainer(cfg, env, overwrite=overwrite).run()
    finally:
        distributed.teardown(env)
