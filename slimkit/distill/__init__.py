"""Knowledge distillation: losses (pure functions) and trainer adapters."""

from slimkit.distill.losses import kd_loss, kd_loss_fn, tfkd_loss, virtual_teacher

__all__ = ["kd_loss", "kd_loss_fn", "tfkd_loss", "virtual_teacher"]
