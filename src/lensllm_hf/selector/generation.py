"""Answers generated during a run's evaluations, scored by a task metric (:mod:`.task_metrics`).

Kept apart from the metrics themselves because it imports transformers: ranking from the store
(``--from-store``) reads the metric names without loading the training stack.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback

from ..errors import LensLLMError
from .task_metrics import TASK_METRICS, GenerationConfig, score

__all__ = ["GenerationMetricCallback", "generate_answers"]


class GenerationMetricCallback(TrainerCallback):
    """Adds ``eval_<metric>`` to every evaluation: the model answers the eval prompts, the answers are scored.

    Put it before :class:`~lensllm_hf.LensLLMCallback` in ``callbacks=[...]``: callbacks share the
    evaluation's ``metrics`` dict in order, so the record keeps the metric beside the loss.

    Args:
        metric: one of :data:`TASK_METRICS`.
        prompts, references: the eval rows' prompts and reference answers (as text).
        generation: see :class:`GenerationConfig`.
    """

    def __init__(self, metric: str, prompts: Sequence[str], references: Sequence[str],
                 generation: GenerationConfig | None = None):
        if metric not in TASK_METRICS:
            raise LensLLMError(f"unknown task metric {metric!r}; choose one of {', '.join(TASK_METRICS)}")
        self.metric = metric
        self.generation = generation or GenerationConfig()
        self.prompts = list(prompts)[: self.generation.rows]
        self.references = list(references)[: self.generation.rows]

    def on_evaluate(self, args, state, control, model=None, processing_class=None, metrics=None, **kwargs):
        if metrics is None or model is None or processing_class is None:
            return
        answers = generate_answers(model, processing_class, self.prompts, self.generation)
        metrics[f"eval_{self.metric}"] = score(self.metric, answers, self.references)


def generate_answers(model, tokenizer, prompts: Sequence[str], generation: GenerationConfig) -> list[str]:
    """Greedy (or beam) answers of ``model`` to ``prompts``; only the new text, special tokens dropped."""
    import torch

    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    was_training = model.training
    side = tokenizer.padding_side
    # A causal LM continues the prompt from its last token: pad on the left so every prompt ends there.
    tokenizer.padding_side = "right" if encoder_decoder else "left"
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(prompts), generation.batch_size):
                batch = tokenizer(list(prompts[start:start + generation.batch_size]), return_tensors="pt",
                                  padding=True)
                batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
                out = model.generate(**batch, max_new_tokens=generation.max_new_tokens, num_beams=generation.num_beams,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id)
                new = out if encoder_decoder else out[:, batch["input_ids"].shape[1]:]
                answers += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers
