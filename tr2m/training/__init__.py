"""Training: the TR2M losses (`losses`), the trainer (`trainer`) and `tr2m-train` (`cli`)."""
from .trainer import TrainConfig, Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train"]
