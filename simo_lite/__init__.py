"""simo_lite: single-input multi-output model merging, small enough to learn from.

Glossary: one name per idea, in function parameters, docstrings and notebooks.

================  ============================================================================
name              meaning
================  ============================================================================
pretrained        θ₀: the encoder's state dict before any task fine-tuning, the one every expert
                  starts from and every merge adds to (the course's foundation encoder, or a
                  pretrained backbone such as DINOv2). Older code also says foundation / base /
                  theta0 for it; new parameters say ``pretrained``.
encoder           the shared ViT (a timm ``VisionTransformer``): images -> features at its taps.
taps              the 0-based blocks whose outputs feed the heads (4 evenly spaced blocks,
                  ``backbones.encoder_io(encoder).taps``, equal to ``Profile.taps``).
heads             ``{task: head}``: one small network per task on the encoder's features; never
                  merged (a merged model keeps each expert's own head).
expert            the model fine-tuned on one task: θ_t and its head.
task_vectors      ``{task: τ_t}`` with τ_t = θ_t − θ₀ (a state dict of differences);
                  ``merging.task_vectors(pretrained, finetuned)`` computes them and merge
                  functions take them as their ``task_vectors`` argument (same name, same thing).
alpha             the merge scaling only: θ = θ₀ + α · merged τ (the validation-selected α of
                  task arithmetic, TIES, ...).
lam               λ: the TALL / consensus mask threshold, and the per-task scale of the λ probes
                  (notebook 08); the learned per-layer coefficients are ``coefficients``.
merged            the encoder state dict a merge returns (with the experts' heads: a merged model).
tasks             a task-set name (``"nyu3"``) or task names; ``tasks.get_tasks`` resolves both
                  to a tuple of names (type alias ``types.Tasks``).
split / splits    a split is one dict of tensors ``{"image": (N,3,H,W), task: labels}``
                  (``types.Split``); splits is ``{"train": split, "val": split, "test": split}``
                  (``types.Splits``), what ``data.load_data`` returns.
StateDict         ``{parameter name: tensor}`` (``types.StateDict``).
dataset           a name in ``data.DATASETS`` (scenes, nyuv2, cityscapes), each a ``DatasetSpec``.
================  ============================================================================

Where things are: ``data`` (dataset registry, loading), ``training`` (the training loop and the
two-stage recipe), ``merging`` (state-dict algebra), ``coefficients`` (merging coefficients learned
on data), ``progress`` (progress bars), ``paths`` (folders), ``types`` (the aliases above).
"""
__version__ = "0.1.0"
