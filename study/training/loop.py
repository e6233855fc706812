"""`study train`: the official SaShiMi recipe as one plain loop, resumable bit for bit after a kill.

Order per step: forward, loss, NaN check, backward, clip, optimizer step, weight check, schedule, log,
checkpoint (after SIGINT/SIGTERM: a final checkpoint, then stop). One process per run folder (a lock).
It never overwrites a good checkpoint with a bad one and never loads one with full pickle.
"""

import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from study.errors import ConfigError
from study.files import check_writable, disk_problem, remove_stale_temporaries
from study.migrate import adopt_moved_run
from study.sashimi import SaShiMi, describe_parameter_groups, parameter_count, parameter_groups
from study.signature import config_delta
from study.training.checkpoint import (CheckpointError, load_checkpoint, load_weights, model_payload, require_keys,
                                       save_checkpoint)
from study.training.evaluation import SPLITS_EVALUATED, evaluate, final_metrics, select_device
from study.training.experiment import Experiment, TrainSettings, load_experiment
from study.training.init_from import resolve_init_from
from study.training.lifecycle import InterruptGuard, RunInterrupted, mark_end_state
from study.training.lock import RunLock
from study.training.metrics import prefixed
from study.training.randomness import restore_rng_state, rng_state, seed_everything
from study.training.record import device_description, git_state, package_versions, read_record, update_record
from study.training.schedule import build_scheduler, group_lr_names
from study.training.step import NonFiniteLoss, build_optimizer, train_step

log = logging.getLogger(__name__)
RESUME_KEYS = ("optimizer_state", "scheduler_state", "rng", "progress")


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last checkpoint with finite ones is kept."""


@dataclass
class Progress:
    """Where a run is; saved in every checkpoint so a resumed run continues at the same window."""
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = -1
    history: list = field(default_factory=list)
    train_seconds: float = 0.0


class Run:
    """One training run in its folder: data, model, optimizer, checkpoints, tracking, record."""

    def __init__(self, experiment: Experiment, reporter: Callable[[dict, "Run"], None] | None = None,
                 command: str = "", on_step: Callable[..., None] | None = None):
        self.experiment = experiment
        self.command = command
        self.settings = experiment.train
        self.reporter = reporter    # after each epoch: reporter(metrics, run)
        self.on_step = on_step      # after each step: on_step(epoch, epochs, step, steps, loss, tokens_per_second)
        self.run_dir = experiment.run_dir
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.device = select_device(self.settings.device)
        self.tracker = None

    # -- setup -------------------------------------------------------------------------------------
    def _prepare_data(self):
        from study.data.dataset import make_loader
        from study.data.prepare import prepare
        config = self.experiment.config
        self.prepared = prepare(self.experiment.data, config.paths, progress=True)
        splits = self.prepared.manifest["splits"]
        windows = {split: int(splits[split]["windows"]) for split in ("train", "val", "test")}
        if windows["train"] < self.settings.batch_size:
            raise ConfigError(
                f"the train split has {windows['train']} windows of {self.prepared.sample_len} samples, fewer than "
                f"train.batch_size={self.settings.batch_size}; lower the batch size or data.sample_len, or add audio")
        for split in SPLITS_EVALUATED:
            if windows[split] == 0:
                raise ConfigError(f"the {split} split has no windows of {self.prepared.sample_len} samples; "
                                  "lower data.sample_len or add audio")
        seed = int(config.seed)
        self.train_loader = make_loader(self.prepared, "train", self.settings.batch_size, shuffle=True, seed=seed,
                                        num_workers=self.settings.num_workers, drop_last=True)
        self.eval_loaders = {split: make_loader(self.prepared, split, self.settings.batch_size, shuffle=False,
                                                seed=seed) for split in SPLITS_EVALUATED}
        batches = len(self.train_loader)
        cap = self.settings.max_steps_per_epoch
        self.steps_per_epoch = min(batches, cap) if cap else batches

    def _build_model(self):
        seed_everything(int(self.experiment.config.seed))
        if self.settings.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        self.model = SaShiMi(self.experiment.model).to(self.device)
        if self.settings.init_from:
            source = resolve_init_from(self.settings.init_from, Path(str(self.experiment.config.paths.runs)))
            payload = load_checkpoint(source, map_location=self.device)
            load_weights(self.model, payload["model_state"], source=str(source))
            log.info("initialised weights from %s (fresh optimizer and schedule)", source)
        self.optimizer = build_optimizer(self.model, self.settings)
        self.lr_names = group_lr_names(self.optimizer.param_groups, self.settings)
        self.scheduler = build_scheduler(self.optimizer, self.settings, self.steps_per_epoch)
        self.forward = torch.compile(self.model) if self.settings.compile else self.model
        self.progress = Progress()

    def _resume(self) -> bool:
        last = self.checkpoint_dir / "last.pt"
        if not last.exists():
            return False
        payload = load_checkpoint(last, map_location=self.device)
        require_keys(payload, RESUME_KEYS, last, " (needed to resume)", ", or move the file away to start the run afresh")
        load_weights(self.model, payload["model_state"], source=str(last))
        try:
            self.optimizer.load_state_dict(payload["optimizer_state"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(payload["scheduler_state"])
            restore_rng_state(payload["rng"])
            self.progress = Progress(**payload["progress"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise CheckpointError(f"{last} cannot resume this run ({type(error).__name__}: {error}); move it away "
                                  "to start the run afresh, or restore the file that `study train` wrote") from error
        log.info("resumed from %s at epoch %d, window %d of the epoch, step %d", last, self.progress.epoch,
                 self.progress.batch_in_epoch, self.progress.step)
        return True

    def _start_tracking(self, resumed: bool):
        tracking = self.experiment.config.tracking
        mode = str(tracking.wandb)
        if mode == "disabled":
            return
        if mode not in ("offline", "online"):
            raise ConfigError(f"tracking.wandb={mode!r} is unknown: use offline, online or disabled")
        import wandb
        run_group = str(self.experiment.config.get("run_group", "train"))
        self.tracker = wandb.init(
            project=str(tracking.project), group=str(tracking.group or run_group),
            name=f"{self.experiment.config.name}-{self.experiment.signature}",
            id=f"{run_group}-{self.experiment.signature}", resume="allow", mode=mode,
            dir=str(self.run_dir), config=OmegaConf.to_container(self.experiment.config, resolve=True),
            settings=wandb.Settings(silent=True, console="off"))
        self.tracker.summary["parameters"] = parameter_count(self.model)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _payload(self) -> dict:
        return {**model_payload(self.model),
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": rng_state(),
                "progress": asdict(self.progress),
                "config": OmegaConf.to_container(self.experiment.config, resolve=True),
                "data_config": OmegaConf.to_container(self.experiment.data, resolve=True),
                "signature": self.experiment.signature}

    def save(self, name: str) -> Path:
        path = self.checkpoint_dir / f"{name}.pt"
        try:
            return save_checkpoint(path, self._payload())
        except OSError as error:
            raise CheckpointError(f"cannot write {path}: {disk_problem(error)}; the previous checkpoint is intact, "
                                  "so run the same command again to resume from it") from error

    # -- the loop ------------------------------------------------------------------------------------
    def _bar(self, epoch: int):
        mode = self.settings.progress
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        return tqdm(total=self.steps_per_epoch, initial=self.progress.batch_in_epoch, disable=not use_bar,
                     desc=f"epoch {epoch + 1}/{self.settings.max_epochs}", unit="step", dynamic_ncols=True)

    def _train_step(self, inputs, targets) -> float:
        try:
            loss = train_step(self.model, self.forward, self.optimizer, inputs.to(self.device), targets.to(self.device),
                              self.settings.precision, self.settings.gradient_clip)
        except NonFiniteLoss as error:
            raise TrainingDiverged(
                f"{error} at step {self.progress.step + 1} (epoch {self.progress.epoch + 1}); the last good "
                f"checkpoint is kept in {self.checkpoint_dir}. Lower train.lr, set train.gradient_clip, "
                "or check the data") from error
        if not self._weights_finite():
            raise TrainingDiverged(
                f"the weights became non-finite in the optimizer step at step {self.progress.step + 1} (epoch "
                f"{self.progress.epoch + 1}, loss {loss:.4f}, largest lr {max(g['lr'] for g in self.optimizer.param_groups)}); "
                f"the last checkpoint with finite weights is kept in {self.checkpoint_dir}. "
                "Lower train.lr or set train.gradient_clip")
        if self.settings.schedule == "cosine":
            self.scheduler.step()
        return loss

    def _weights_finite(self) -> bool:
        return bool(torch.stack([torch.isfinite(p.detach()).all() for p in self.model.parameters()]).all())

    def _train_epoch(self, epoch: int) -> float:
        progress = self.progress
        self.train_loader.sampler.set_epoch(epoch, start_index=progress.batch_in_epoch * self.settings.batch_size)
        tokens_per_step = self.settings.batch_size * self.prepared.sample_len
        losses, started = [], time.perf_counter()
        with self._bar(epoch) as bar:
            for inputs, targets in self.train_loader:
                if progress.batch_in_epoch >= self.steps_per_epoch:
                    break
                step_start = time.perf_counter()
                loss = self._train_step(inputs, targets)
                progress.train_seconds += time.perf_counter() - step_start
                losses.append(loss)
                progress.batch_in_epoch += 1
                progress.step += 1
                rate = tokens_per_step * len(losses) / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{loss:.4f}", tokens_per_s=f"{rate:,.0f}")
                bar.update(1)
                if self.on_step is not None:
                    self.on_step(epoch + 1, self.settings.max_epochs, progress.batch_in_epoch, self.steps_per_epoch,
                                 loss, rate)
                if bar.disable and progress.step % self.settings.log_every_steps == 0:
                    log.info("epoch %d step %d/%d loss %.4f tokens/s %.0f", epoch + 1, progress.batch_in_epoch,
                             self.steps_per_epoch, loss, rate)
                if self.tracker is not None and progress.step % self.settings.log_every_steps == 0:
                    self.tracker.log({"train/loss_step": loss, "trainer/step": progress.step})
                if self.interrupts.pending is not None:
                    self.save("last")
                    raise RunInterrupted(self.interrupts.pending)
                if progress.step % self.settings.checkpoint_every_steps == 0:
                    self.save("last")
        return float(np.mean(losses)) if losses else math.nan

    def _end_epoch(self, epoch: int, train_loss: float) -> dict:
        metrics = {"epoch": epoch + 1, "step": self.progress.step, "train/loss": train_loss, **self._learning_rates()}
        for split, loader in self.eval_loaders.items():
            metrics.update(prefixed(evaluate(self.model, loader, self.device, self.settings.precision,
                                             self.settings.max_eval_windows), split))
        if not math.isfinite(metrics["val/loss"]):
            raise TrainingDiverged(
                f"the validation loss became {metrics['val/loss']} after epoch {epoch + 1} (train loss {train_loss}); "
                f"the last checkpoint with finite loss is kept in {self.checkpoint_dir}. "
                "Lower train.lr, set train.gradient_clip, or check the data")
        if self.settings.schedule == "plateau":
            self.scheduler.step(metrics["val/loss"])
        improved = metrics["val/loss"] < self.progress.best_val_loss
        if improved:
            self.progress.best_val_loss, self.progress.best_epoch = metrics["val/loss"], epoch
        self.progress.history.append(metrics)
        self.progress.epoch, self.progress.batch_in_epoch = epoch + 1, 0
        if improved:
            self.save("best")
        self.save("last")
        log.info("epoch %d: train loss %.4f  val loss %.4f (bpb %.4f)  test loss %.4f%s", epoch + 1, train_loss,
                 metrics["val/loss"], metrics["val/bpb"], metrics["test/loss"], "  [best]" if improved else "")
        if self.tracker is not None:
            self.tracker.log(metrics)
        update_record(self.run_dir, status="running", progress={"epoch": epoch + 1, "step": self.progress.step},
                      history=self.progress.history)
        if self.reporter is not None:
            self.reporter(metrics, self)
        return metrics

    def _learning_rates(self) -> dict[str, float]:
        """lr: train.lr as scheduled now (the base group's lr); lr/<group>: every group's lr."""
        rates = {name: group["lr"] for name, group in zip(self.lr_names, self.optimizer.param_groups)}
        return {"lr": rates.get("lr/default", rates.get("lr/no_weight_decay", self.settings.lr)), **rates}

    def execute(self) -> dict:
        """Train to the end (or resume and finish); returns the run record.

        Holds the run folder's lock throughout; any error marks the record `failed` with its message,
        SIGINT/SIGTERM mark it `interrupted` after a final checkpoint."""
        adopt_moved_run(self.run_dir)  # a folder named by an earlier signature scheme becomes this one
        if read_record(self.run_dir).get("status") == "finished":
            print(f"already finished: {self.run_dir} (signature {self.experiment.signature}); nothing to do")
            return read_record(self.run_dir)
        check_writable(self.run_dir, "paths.runs")
        self.interrupts = InterruptGuard()
        with RunLock(self.run_dir, f"{self.run_dir} ({self.experiment.config.name})"), self.interrupts:
            for folder in (self.run_dir, self.checkpoint_dir):
                for stale in remove_stale_temporaries(folder):
                    log.info("removed %s, left by an interrupted write", stale)
            record = read_record(self.run_dir)
            if record.get("status") == "finished":
                print(f"already finished: {self.run_dir} (signature {self.experiment.signature}); nothing to do")
                return record
            try:
                return self._execute(record)
            except RunInterrupted as interruption:
                mark_end_state(self.run_dir, status="interrupted", error=None, interrupted={
                    "signal": signal.Signals(interruption.signal_number).name, "time": time.time(),
                    "step": getattr(getattr(self, "progress", None), "step", None)})
                raise
            except BaseException as error:
                mark_end_state(self.run_dir, status="failed", error=f"{type(error).__name__}: {error}")
                raise
            finally:
                self._finish_tracking()

    def _execute(self, record: dict) -> dict:
        started = time.time()
        self._prepare_data()
        self._build_model()
        resumed = self._resume()
        if resumed:
            resumes = record.get("resumes", []) + [{"step": self.progress.step, "epoch": self.progress.epoch,
                                                    "batch_in_epoch": self.progress.batch_in_epoch,
                                                    "time": time.time()}]
            record = update_record(self.run_dir, resumes=resumes)
        config = self.experiment.config
        update_record(
            self.run_dir, status="running", error=None, name=str(config.name), signature=self.experiment.signature,
            signature_delta=config_delta(config),
            config=OmegaConf.to_container(config, resolve=True),
            data_config=OmegaConf.to_container(self.experiment.data, resolve=True),
            data_fingerprint=self.prepared.fingerprint, data_cache=str(self.prepared.path),
            data_warnings=list(self.prepared.manifest.get("warnings", [])),
            parameters=parameter_count(self.model), seed=int(config.seed), git=git_state(Path(__file__).parent),
            optimizer_groups=describe_parameter_groups(self.model, parameter_groups(
                self.model, self.settings.lr, self.settings.weight_decay, self.settings.exempt_decoder_bias)),
            deviations=deviations(self.settings),
            packages=package_versions(), device=device_description(self.device),
            command=self.command,
            started=record.get("started", started))
        self._start_tracking(resumed)
        log.info("run %s: %s, %s parameters, %d steps per epoch, device %s", self.experiment.signature,
                 config.name, f"{parameter_count(self.model):,}", self.steps_per_epoch, self.device)
        self.interrupts.deferred = True
        for epoch in range(self.progress.epoch, self.settings.max_epochs):
            train_loss = self._train_epoch(epoch)
            self._end_epoch(epoch, train_loss)
            if self.interrupts.pending is not None:
                raise RunInterrupted(self.interrupts.pending)
        self.interrupts.deferred = False
        final = final_metrics(self.model, self.checkpoint_dir / "best.pt", self.eval_loaders, self.device,
                              self.settings.precision, self.settings.max_eval_windows)
        wall = time.time() - started + float(record.get("wall_seconds", 0.0))
        record = update_record(self.run_dir, status="finished", final_metrics=final, wall_seconds=wall,
                               train_seconds=self.progress.train_seconds, best_epoch=self.progress.best_epoch + 1,
                               best_checkpoint=str(self.checkpoint_dir / "best.pt"), finished=time.time())
        if self.tracker is not None:
            self.tracker.summary.update(final)
            self._log_audio_sample()
        return record

    def _log_audio_sample(self) -> None:
        """A short unconditional sample from the best checkpoint, into the tracker."""
        seconds = float(self.experiment.config.tracking.get("log_audio_seconds", 0) or 0)
        if seconds <= 0:
            return
        import wandb

        from study.generation.generator import Generator
        generator = Generator(self.checkpoint_dir / "best.pt", device=str(self.device))
        result = generator.generate(None, seconds=seconds, n=1, seed=int(self.experiment.config.seed))
        audio = generator.audio.decode(result.continuations[0].tokens)
        self.tracker.log({"sample/unconditional": wandb.Audio(audio, sample_rate=generator.audio.sample_rate)})

    def _finish_tracking(self):
        if self.tracker is not None:
            self.tracker.finish()
            self.tracker = None


def deviations(settings: TrainSettings) -> list[str]:
    """The deliberate departures from the official recipe this run makes (empty by default)."""
    found = []
    if settings.exempt_decoder_bias:
        found.append("train.exempt_decoder_bias=true: the decoder bias takes no weight decay (official: decayed)")
    return found


def train(experiment: Experiment, reporter=None, command: str = "") -> dict:
    return Run(experiment, reporter, command).execute()


def main(argv: list[str]) -> int:
    experiment = load_experiment(argv)
    try:
        record = train(experiment, command=" ".join(["study", "train", *argv]))
    except TrainingDiverged as error:
        print(f"study train: {error}", file=sys.stderr)
        return 1
    except RunInterrupted as interruption:
        print(f"study train: {interruption}; the last checkpoint is in {experiment.run_dir / 'checkpoints'}, "
              "run the same command again to resume", file=sys.stderr)
        return 128 + interruption.signal_number
    run_dir = experiment.run_dir
    print(f"finished: {record.get('name')} ({record.get('signature')})")
    for name, value in sorted(record.get("final_metrics", {}).items()):
        print(f"  {name:<24} {value:.4f}")
    print(f"run folder: {run_dir}\n  record: {run_dir / 'run.json'}\n  checkpoints: {run_dir / 'checkpoints'}")
    return 0
