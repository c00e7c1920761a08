"""Knowledge distillation: losses (pure functions), the stored-logit store and trainer adapters."""

from slimkit.distill.feature import FeatureAdapter, feature_kd_loss
from slimkit.distill.losses import kd_loss, kd_loss_fn, tfkd_loss, virtual_teacher
from slimkit.distill.probe import extract_features, linear_probe
from slimkit.distill.proxyless import proxyless_kd_loss, teacher_classifier
from slimkit.distill.seed import EmbeddingQueue, SeedLoss, SeedStudent, seed_loss
from slimkit.distill.ssl import SimCLRLoss, nt_xent_loss, random_views
from slimkit.distill.store import LogitStore, dataset_fingerprint, write_logit_store
from slimkit.distill.stored_kd import StoredKDLoss, sparse_kd_loss, sparse_soft_target
from slimkit.distill.tasks import DistillOptions, DistillTask, create_distill_task, list_distillers, method_options

__all__ = [
    "DistillOptions", "DistillTask", "EmbeddingQueue", "FeatureAdapter", "LogitStore", "SeedLoss", "SeedStudent",
    "SimCLRLoss", "StoredKDLoss", "create_distill_task", "dataset_fingerprint", "extract_features", "feature_kd_loss",
    "kd_loss", "kd_loss_fn", "linear_probe", "list_distillers", "method_options", "nt_xent_loss", "proxyless_kd_loss",
    "random_views", "seed_loss", "sparse_kd_loss", "sparse_soft_target", "teacher_classifier", "tfkd_loss",
    "virtual_teacher", "write_logit_store",
]
