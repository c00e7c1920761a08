"""Knowledge distillation: losses (pure functions), the stored-logit store and trainer adapters."""

from slimkit.distill.losses import kd_loss, kd_loss_fn, tfkd_loss, virtual_teacher
from slimkit.distill.store import LogitStore, dataset_fingerprint, write_logit_store
from slimkit.distill.stored_kd import StoredKDLoss, sparse_kd_loss, sparse_soft_target

__all__ = ["LogitStore", "StoredKDLoss", "dataset_fingerprint", "kd_loss", "kd_loss_fn", "sparse_kd_loss",
           "sparse_soft_target", "tfkd_loss", "virtual_teacher", "write_logit_store"]
