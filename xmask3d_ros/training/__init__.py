"""Training and evaluation of XMask3D: view datasets, trainer, evaluator (imports data,
geometry, model, metrics). The view dataset lives here, not in ``data/``, because the
reference's view selection needs the visibility test of ``geometry/``."""
