"""Peak memory of one training run, estimated from the candidate's config before any weight loads.

A run's peak is taken as ``weights + max(gradients + optimizer states + activations, NTK probe)``:

- **weights**: every parameter and buffer in the dtype the run loads them in (``model_kwargs``
  ``dtype``; without one, transformers' ``"auto"``: the config's dtype, else float32). With
  ``load_in_4bit`` the ``Linear`` weights (not the output head) take 4 bits plus one float32
  scale per 64 (bitsandbytes NF4) and PEFT's ``prepare_model_for_kbit_training`` makes the
  others float32, as the runner loads them.
- **gradients**: the trainable parameters (all of them, or the adapter's with PEFT) in their dtype.
- **optimizer states**: per trainable parameter, AdamW's two moments in its dtype (``optim``:
  8-bit optimizers one byte per moment, Lion, Adagrad and RMSprop one moment, SGD and Adafactor
  none: SGD without momentum keeps nothing, Adafactor's factored moments are small). With
  ``bf16``/``fp16`` on float32 weights, autocast's half-precision copies of the trainable weights
  are added here.
- **activations**: what autograd saves for the backward pass of one training batch whose rows
  are all as long as the run's longest (each batch is padded to its longest row): the model's
  forward is run on PyTorch's ``meta`` device (shapes, no data, no weights) under
  ``torch.autograd.graph.saved_tensors_hooks``, so the architecture's own attention, MLP,
  norms, dropout masks, LoRA paths and loss are counted as they run, each saved tensor once;
  plus twice the largest saved tensor (the backward's gradient buffers of the loss's
  log-softmax and logits). Activation checkpointing (``activation_checkpointing``, always on
  with 4-bit, as PEFT enables it) keeps only each checkpointed layer's input, plus one layer's
  activations for its recompute. Under mixed precision the trace runs in half precision. An
  evaluation batch's logits (``per_device_eval_batch_size`` rows, with their float copy and
  log-softmax) count when they are larger.
- **NTK probe**: the per-example gradients of the probe's examples, at most its memory budget
  (2 GiB, ``LensLLMCallback(probe_memory_mb=...)``); it runs before the optimizer states exist.

Left out: the framework's own memory (the CUDA context, about 0.5 GiB; the Python process and
its libraries on CPU), the allocator's fragmentation, and DeepSpeed/FSDP sharding. A zero-shot
run (size 0) only evaluates: weights and the evaluation batch.

For a full float32 fine-tune, weights + gradients + optimizer states are what ``accelerate
estimate-memory`` reports as "Training using Adam" (16 bytes per parameter, batch size 1, no
activations); the estimate adds the activations, the dtype, LoRA and 4-bit loading.

Example (``config`` a model's ``AutoConfig``, ``args`` its ``TrainingArguments``)::

    memory = CandidateMemory(config, args, model_kwargs={"dtype": "bfloat16"})
    memory.estimate(seq_len=512).peak / 2**30     # GiB at the run's longest row of 512 tokens
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GIB", "CandidateMemory", "MemoryEstimate", "meta_model", "optimizer_bytes_per_parameter"]

GIB = 2**30
#: bitsandbytes NF4: 4 bits per weight plus one float32 absmax per block of 64.
NF4_BYTES = 0.5 + 4 / 64
#: The NTK probe's default memory budget (``LensLLMCallback(probe_memory_mb=2048)``).
PROBE_BUDGET = 2048 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """One run's estimated memory, in bytes, by part (see the module docstring)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    probe: float = 0.0

    @property
    def peak(self) -> float:
        return self.weights + max(self.gradients + self.optimizer + self.activations, self.probe)

    def to_dict(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in asdict(self).items()}, "peak": float(self.peak)}


def optimizer_bytes_per_parameter(optim: str, param_bytes: int) -> float:
    """Bytes of optimizer state per trainable parameter of ``param_bytes`` for a Trainer ``optim`` name."""
    name = str(getattr(optim, "value", optim)).lower()
    moments = 0 if name.startswith(("sgd", "adafactor", "lomo", "adalomo")) else \
        1 if name.startswith(("lion", "paged_lion", "adagrad", "rmsprop")) else 2
    return moments * (1 if "8bit" in name else param_bytes)


class CandidateMemory:
    """One candidate's memory model: its ``meta`` model is built once, then asked per run.

    Args:
        config: the candidate's ``transformers`` config.
        args: the run's ``TrainingArguments``.
        model_kwargs: the candidate's ``model_kwargs`` (``dtype``, ``load_in_4bit``).
        peft_config: its adapter, if any (a PEFT config object).
        probe_examples: examples of the NTK probe (0: no probe).
    """

    def __init__(self, config: Any, args: Any, *, model_kwargs: Mapping[str, Any] | None = None,
                 peft_config: Any = None, probe_examples: int = 0):
        import torch

        kwargs = dict(model_kwargs or {})
        half = (torch.float16, torch.bfloat16)
        self.args = args
        four_bit = bool(kwargs.get("load_in_4bit"))
        dtype = _dtype(kwargs.get("dtype", kwargs.get("torch_dtype")), config)
        mixed = dtype not in half and bool(args.bf16 or args.fp16)  # autocast over float32 weights
        if four_bit:  # bitsandbytes computes in the given half dtype, else bfloat16 (as the runner loads it)
            self.compute_dtype = dtype if dtype in half else torch.bfloat16
        else:
            self.compute_dtype = (torch.float16 if args.fp16 else torch.bfloat16) if mixed else dtype
        model = meta_model(config, dtype, peft_config)
        head = model.get_output_embeddings()
        self.vocab = int(head.weight.shape[0]) if head is not None else int(config.get_text_config().vocab_size)
        # bitsandbytes quantizes the base model's Linear layers (not the head), before any adapter exists.
        quantized = {id(m.weight) for m in model.modules() if four_bit and isinstance(m, torch.nn.Linear)
                     and m is not head and (peft_config is None or not m.weight.requires_grad)}
        self.weights = float(sum(b.numel() * b.element_size() for b in model.buffers()))
        self.gradients = self.optimizer = 0.0
        for p in model.parameters():
            if id(p) in quantized:
                self.weights += p.numel() * NF4_BYTES
                continue
            size = 4 if four_bit else p.element_size()  # k-bit preparation makes the rest float32
            self.weights += p.numel() * size
            if p.requires_grad:
                self.gradients += p.numel() * size
                self.optimizer += p.numel() * optimizer_bytes_per_parameter(args.optim, size)
        #: autocast keeps a half-precision copy of each trainable float32 weight while a step runs.
        self.autocast_copies = self.gradients / 2 if mixed else 0.0
        self.probe = float(min(probe_examples * self.gradients, PROBE_BUDGET)) if probe_examples else 0.0
        checkpointing = bool(args.activation_checkpointing) or four_bit  # PEFT turns it on with 4-bit
        options = args.activation_checkpointing_kwargs or {}
        self._every = int(options.get("every_n_layers", 1)) if checkpointing else 0
        self._trace_model = model if self.compute_dtype == dtype else meta_model(config, self.compute_dtype,
                                                                                   peft_config)
        self._traces: dict[tuple[int, int], float] = {}

    def estimate(self, seq_len: int, *, train: bool = True) -> MemoryEstimate:
        """The run's memory when its longest row has ``seq_len`` tokens (``train=False``: a zero-shot evaluation)."""
        import torch

        seq_len = max(1, int(seq_len))
        logit_bytes = 2 if self.compute_dtype in (torch.float16, torch.bfloat16) else 4
        # An evaluation batch's logits, their float copy for the loss and its log-softmax.
        evaluation = self.args.per_device_eval_batch_size * seq_len * self.vocab * (logit_bytes + 8.0)
        if not train:
            return MemoryEstimate(self.weights, 0.0, 0.0, evaluation)
        key = (int(self.args.per_device_train_batch_size), seq_len)
        if key not in self._traces:
            self._traces[key] = _saved_for_backward(self._trace_model, *key, self._every)
        activations = max(self._traces[key] + self.autocast_copies, evaluation)
        return MemoryEstimate(self.weights, self.gradients, self.optimizer, activations, self.probe)


def _dtype(value: Any, config: Any):
    """The torch dtype a run loads the weights in: the given one, else the config's ("auto"), else float32."""
    import torch

    if value in (None, "auto"):
        value = getattr(config, "dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def meta_model(config: Any, dtype: Any, peft_config: Any):
    """The candidate's model on the meta device in ``dtype`` (with its adapter), in training mode: its
    shapes and parameters without any weight (what the cost and memory estimates are made from)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    config = copy.deepcopy(config)  # from_config writes the dtype into it
    for part in {id(c): c for c in (config, config.get_text_config())}.values():
        part.pad_token_id = None  # else the forward looks for padding in the (meta, value-less) input ids
    with torch.device("meta"):
        model = auto.from_config(config, dtype=dtype)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
    return model.train()


def _saved_for_backward(model: Any, batch: int, seq_len: int, every_n_layers: int) -> float:
    """Bytes autograd keeps for the backward of one ``batch x seq_len`` training step (see the module docstring).

    ``every_n_layers`` > 0: activation checkpointing of every n-th decoder layer.
    """
    import torch
    from transformers.modeling_layers import GradientCheckpointingLayer

    held = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    checkpointed = set(map(id, layers[::every_n_layers])) if every_n_layers > 0 else set()
    saved: dict[int, tuple[float, int | None]] = {}  # storage -> (bytes, layer)
    inputs: dict[int, float] = {}  # checkpointed layer -> bytes of its input
    current: list[int | None] = [None]

    def enter(module, args, kwargs):
        current[0] = id(module)
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            inputs[id(module)] = float(hidden.numel() * hidden.element_size())

    def leave(module, args, output):
        current[0] = None

    def pack(tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in held and id(tensor) not in held:
            saved.setdefault(id(base), (float(base.numel() * base.element_size()), current[0]))
        return tensor

    hooks = [h for m in layers for h in (m.register_forward_pre_hook(enter, with_kwargs=True),
                                         m.register_forward_hook(leave))]
    # No attention mask: a meta mask cannot be inspected; rows of one length need none.
    ids = torch.zeros((batch, seq_len), dtype=torch.long, device="meta")
    inputs_kw = {"input_ids": ids, "labels": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs_kw["decoder_input_ids"] = ids
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        # Fake tensors (on the meta device) make transformers take its tracing paths: no look at a mask's values.
        with FakeTensorMode(allow_non_fake_inputs=True), _memory_efficient_attention_mode(), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model(**inputs_kw)
        del output
    finally:
        for hook in hooks:
            hook.remove()
    outside = sum(size for size, layer in saved.values() if layer not in checkpointed)
    per_layer: dict[int, float] = {}
    for size, layer in saved.values():
        if layer in checkpointed:
            per_layer[layer] = per_layer.get(layer, 0.0) + size
    recompute = max(per_layer.values(), default=0.0) + sum(inputs.get(layer, 0.0) for layer in checkpointed)
    largest = max((size for size, _ in saved.values()), default=0.0)
    return outside + recompute + 2 * largest


def _efficient_attention():
    """An autograd function with the output and saved tensors of a memory-efficient attention kernel (meta only)."""
    import torch

    class EfficientAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value):
            output = query.new_empty((*query.shape[:-1], value.shape[-1]))
            ctx.save_for_backward(query, key, value, output, query.new_empty(query.shape[:-1], dtype=torch.float32))
            return output

        @staticmethod
        def backward(ctx, grad):  # pragma: no cover - a trace never runs the backward
            return None, None, None

    return EfficientAttention


def _memory_efficient_attention_mode():
    import torch
    from torch.overrides import TorchFunctionMode

    sdpa = torch.nn.functional.scaled_dot_product_attention
    names = ("query", "key", "value", "attn_mask", "dropout_p")

    class MemoryEfficientAttention(TorchFunctionMode):
        """``scaled_dot_product_attention`` without dropout as the flash and memory-efficient kernels run it
        (CUDA, and CPU's flash kernel): they keep q, k, v, the output and a log-sum-exp, never the s x s
        probabilities that the meta device's math path would save. With dropout the math path is kept,
        as CPU runs it."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is sdpa:
                given = {**dict(zip(names, args)), **kwargs}
                if not given.get("dropout_p"):
                    return _efficient_attention().apply(given["query"], given["key"], given["value"])
            return func(*args, **kwargs)

    return MemoryEfficientAttention()
