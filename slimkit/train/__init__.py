"""Generic training: config, trainer with callbacks and exact resume, evaluation, schedules, checkpoints."""

from slimkit.train.callbacks import Callback, DynamicTemperature
from slimkit.train.checkpoint import save_weights
from slimkit.train.config import TrainConfig
from slimkit.train.evaluate import LossFn, cross_entropy_loss, evaluate
from slimkit.train.schedules import lr_at
from slimkit.train.seeding import own_rng, seed_everything, seeded
from slimkit.train.trainer import Trainer, TrainResult, build_optimizer

__all__ = ["Callback", "DynamicTemperature", "LossFn", "TrainConfig", "TrainResult", "Trainer", "build_optimizer",
           "cross_entropy_loss", "evaluate", "lr_at", "save_weights",
           "own_rng", "seed_everything", "seeded"]
