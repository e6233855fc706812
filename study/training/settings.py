"""The `train` config group: schema, defaults (the official YouTubeMix recipe) and range checks.

The one place a training default is written; experiments/train/*.yaml only override it. Trains nothing.
"""

from dataclasses import dataclass

from study import validation


@dataclass
class TrainSettings:
    """The official recipe (state-spaces/s4 configs/experiment/audio/sashimi-youtubemix.yaml): AdamW lr 0.004,
    weight decay 0, betas (0.9, 0.999); SSM dt, A, B, P at lr 0.001 without weight decay (set in the model);
    ReduceLROnPlateau on val loss (factor 0.2, patience 20 epochs); batch size 1; up to 1000 epochs; fp32;
    no gradient clipping."""

    lr: float = 0.004
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 1
    max_epochs: int = 1000
    max_steps_per_epoch: int | None = None   # cap on optimizer steps per epoch (smoke scale)
    max_eval_windows: int | None = None      # cap on windows per val/test evaluation (smoke scale)
    schedule: str = "plateau"                # plateau (official) | cosine (with warmup) | constant
    plateau_factor: float = 0.2
    plateau_patience: int = 20
    warmup_steps: int = 0
    min_lr: float = 0.0
    gradient_clip: float | None = None
    exempt_decoder_bias: bool = False        # deviation: no weight decay on the decoder bias (official: decayed)
    precision: str = "fp32"                  # fp32 | bf16 (autocast, CUDA only)
    compile: bool = False
    device: str = "auto"                     # auto | cpu | cuda
    deterministic: bool = True
    checkpoint_every_steps: int = 100        # mid-epoch `last` checkpoints, for preemption
    log_every_steps: int = 50
    init_from: str | None = None             # checkpoint path, run signature or study:NAME to start from
    num_workers: int = 0
    progress: str = "auto"                   # auto (bar on a terminal, log lines otherwise) | bar | log

    def __post_init__(self) -> None:
        validation.number("train.lr", self.lr, 0.004, above=0)
        validation.number("train.weight_decay", self.weight_decay, 0.0, minimum=0)
        validation.numbers("train.betas", self.betas, "[0.9,0.999]", minimum=0, below=1, length=2)
        self.betas = tuple(float(beta) for beta in self.betas)
        validation.integer("train.batch_size", self.batch_size, 1, minimum=1)
        validation.integer("train.max_epochs", self.max_epochs, 1000, minimum=1)
        validation.integer("train.max_steps_per_epoch", self.max_steps_per_epoch, 40, minimum=1, optional=True)
        validation.integer("train.max_eval_windows", self.max_eval_windows, 4, minimum=1, optional=True)
        validation.choice("train.schedule", self.schedule, ("plateau", "cosine", "constant"))
        validation.number("train.plateau_factor", self.plateau_factor, 0.2, above=0, below=1)
        validation.integer("train.plateau_patience", self.plateau_patience, 20, minimum=0)
        validation.integer("train.warmup_steps", self.warmup_steps, 0, minimum=0)
        validation.number("train.min_lr", self.min_lr, 0.0, minimum=0)
        validation.number("train.gradient_clip", self.gradient_clip, 1.0, above=0, optional=True)
        validation.flag("train.exempt_decoder_bias", self.exempt_decoder_bias)
        validation.choice("train.precision", self.precision, ("fp32", "bf16"))
        validation.flag("train.compile", self.compile)
        validation.choice("train.device", self.device, ("auto", "cpu", "cuda"))
        validation.flag("train.deterministic", self.deterministic, True)
        validation.integer("train.checkpoint_every_steps", self.checkpoint_every_steps, 100, minimum=1)
        validation.integer("train.log_every_steps", self.log_every_steps, 50, minimum=1)
        validation.text("train.init_from", self.init_from, "study:replicate", optional=True)
        validation.integer("train.num_workers", self.num_workers, 0, minimum=0)
        validation.choice("train.progress", self.progress, ("auto", "bar", "log"))
