"""Task data the way people have it, turned into a Trainer for each kind of candidate.

Three layouts of the task's rows, chosen by which columns the config names:

========================  =========================================  ==================================
layout                    columns                                    the loss counts
========================  =========================================  ==================================
``text``                  ``text_column``                            every token (causal LM)
``prompt_completion``     ``prompt_column``, ``completion_column``   the completion's tokens
``messages``              ``messages_column`` (``[{role, content}]``)  the last assistant turn's tokens
========================  =========================================  ==================================

Causal LMs train plain text with ``Trainer`` and ``DataCollatorForLanguageModeling`` (as ever),
and prompt/completion or conversational data with TRL's ``SFTTrainer`` (completion-only loss, the
candidate's own chat template). Encoder-decoder candidates (``config.is_encoder_decoder``: T5,
BART, mT5) train with ``Seq2SeqTrainer`` and ``DataCollatorForSeq2Seq`` on prompt -> completion.
In every case the eval loss is the mean cross-entropy per completion token, so a mixed list of
causal and encoder-decoder candidates is ranked on one scale (per token of each model's own
tokenizer: compare candidates whose tokenizers split text alike, or rank by a task metric).

Example:
    >>> fmt = TaskFormat(prompt_column="question", completion_column="answer")
    >>> fmt.layout
    'prompt_completion'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LensLLMError

__all__ = ["LAYOUTS", "TaskFormat", "is_encoder_decoder"]

LAYOUTS = ("text", "prompt_completion", "messages")


def is_encoder_decoder(model) -> bool:
    """Whether a loaded model (or its PEFT wrapper) is an encoder-decoder, from its config."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "is_encoder_decoder", False))


@dataclass(frozen=True)
class TaskFormat:
    """Which columns hold the task, and how long its examples may be.

    Attributes:
        text_column: the plain-text column (layout ``text``).
        prompt_column, completion_column: a prompt and its completion (layout ``prompt_completion``).
        messages_column: a conversation, a list of ``{"role", "content"}`` (layout ``messages``); the
            last assistant message is the completion, everything before it the prompt.
        chat_template: a Jinja chat template for tokenizers that have none (or to override theirs).
        max_length: longest tokenized example; longer ones are cut.
    """

    text_column: str = "text"
    prompt_column: str | None = None
    completion_column: str | None = None
    messages_column: str | None = None
    chat_template: str | None = None
    max_length: int = 512

    def __post_init__(self) -> None:
        if (self.prompt_column is None) != (self.completion_column is None):
            raise LensLLMError("prompt_column and completion_column go together; set both (or neither, for "
                               "text_column or messages_column data)")
        if self.messages_column is not None and self.prompt_column is not None:
            raise LensLLMError("set either messages_column (conversations) or prompt_column/completion_column, "
                               "not both")

    @property
    def layout(self) -> str:
        """``"text"``, ``"prompt_completion"`` or ``"messages"``."""
        if self.messages_column is not None:
            return "messages"
        return "prompt_completion" if self.prompt_column is not None else "text"

    @property
    def columns(self) -> tuple[str, ...]:
        """The dataset columns this layout reads."""
        return {"text": (self.text_column,), "prompt_completion": (self.prompt_column, self.completion_column),
                "messages": (self.messages_column,)}[self.layout]

    def check_columns(self, dataset, where: str = "the dataset") -> None:
        """One-line error when ``dataset`` lacks a column this layout reads."""
        names = list(getattr(dataset, "column_names", None) or [])
        missing = [c for c in self.columns if c not in names]
        if missing:
            key = {"text": "text_column", "prompt_completion": "prompt_column/completion_column",
                   "messages": "messages_column"}[self.layout]
            raise LensLLMError(f"{where} has no column {missing[0]!r} (its columns: {', '.join(names) or 'none'}); "
                               f"set {key} to the right column")

    # -- tokenizers -----------------------------------------------------------------------------

    def prepare_tokenizer(self, tokenizer, candidate: str) -> None:
        """Give the tokenizer the configured chat template; conversations need one."""
        if self.chat_template is not None:
            tokenizer.chat_template = self.chat_template
        self.check_candidate(candidate, tokenizer=tokenizer)

    def check_candidate(self, candidate: str, *, encoder_decoder: bool = False, tokenizer=None) -> None:
        """One line naming ``candidate`` when this layout cannot train it: an encoder-decoder on plain
        text, or conversations with a tokenizer that has no chat template (and none is configured).

        What :meth:`trainer` and :meth:`prepare_tokenizer` would find when a run starts; the selector
        asks it before any model loads, from the candidate's config and tokenizer.
        """
        if encoder_decoder and self.layout == "text":
            raise LensLLMError(f"candidate {candidate!r} is an encoder-decoder, which needs prompt -> completion "
                               "data; set prompt_column and completion_column (or messages_column) in the config, "
                               "or drop the candidate")
        if (self.layout == "messages" and tokenizer is not None and self.chat_template is None
                and not getattr(tokenizer, "chat_template", None)):
            raise LensLLMError(f"candidate {candidate!r}: its tokenizer has no chat template, which conversational "
                               "data needs; set chat_template in the config (a Jinja template) or pick a chat model")

    # -- rows -----------------------------------------------------------------------------------

    def pairs(self, dataset, tokenizer=None) -> tuple[list[str], list[str]]:
        """(prompts, completions) as text, for generation metrics and encoder-decoder candidates.

        Conversations are rendered with the tokenizer's chat template up to the last assistant
        turn (with the generation prompt), whose content is the completion.
        """
        if self.layout == "text":
            raise LensLLMError("text data has no prompt/completion pairs; set prompt_column and completion_column "
                               "(or messages_column) for task metrics and encoder-decoder candidates")
        if self.layout == "prompt_completion":
            return ([_text(p) for p in dataset[self.prompt_column]],
                    [_text(c) for c in dataset[self.completion_column]])
        prompts, completions = [], []
        for i, messages in enumerate(dataset[self.messages_column]):
            head, last = _split_conversation(messages, i)
            prompts.append(_render(tokenizer, head) if tokenizer is not None else _plain_render(head))
            completions.append(last)
        return prompts, completions

    def sft_rows(self, dataset):
        """The rows in TRL's standard columns: ``text``, or ``prompt``/``completion`` (conversational for chats)."""
        if self.layout == "text":
            return dataset.select_columns([self.text_column]).rename_column(self.text_column, "text") \
                if self.text_column != "text" else dataset.select_columns(["text"])
        if self.layout == "prompt_completion":
            rows = {"prompt": [_text(p) for p in dataset[self.prompt_column]],
                    "completion": [_text(c) for c in dataset[self.completion_column]]}
        else:
            rows = {"prompt": [], "completion": []}
            for i, messages in enumerate(dataset[self.messages_column]):
                head, last = _split_conversation(messages, i)
                rows["prompt"].append([{"role": m["role"], "content": m["content"]} for m in head])
                rows["completion"].append([{"role": "assistant", "content": last}])
        from datasets import Dataset

        return Dataset.from_dict(rows)

    def seq2seq_features(self, dataset, tokenizer):
        """Encoder-decoder features: the prompt as ``input_ids``, the completion as ``labels``."""
        prompts, completions = self.pairs(dataset, tokenizer if self.layout == "messages" else None)
        from datasets import Dataset

        features = tokenizer(prompts, truncation=True, max_length=self.max_length)
        features["labels"] = tokenizer(text_target=completions, truncation=True, max_length=self.max_length)["input_ids"]
        return Dataset.from_dict(dict(features))

    def input_lengths(self, rows, tokenizer, *, encoder_decoder: bool) -> list[int]:
        """Input tokens per row, as the Trainer counts them for FLOPs (``6 x parameters x
        input_ids``): an encoder-decoder's prompt; a causal LM's text, or prompt and completion
        as TRL's SFT tokenises them (the EOS appended, conversations through the chat template),
        cut at ``max_length``. What ``lensllm plan`` estimates a run's cost from."""
        if encoder_decoder:
            return [len(ids) for ids in self.seq2seq_features(rows, tokenizer)["input_ids"]]
        if self.layout == "text":
            return [len(ids) for ids in _lm_features(self)(rows, tokenizer)["input_ids"]]
        sft = self.sft_rows(rows)
        eos = getattr(tokenizer, "eos_token", None) or ""
        lengths = []
        for prompt, completion in zip(sft["prompt"], sft["completion"]):
            if self.layout == "messages":
                ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
            else:
                text = prompt + completion
                ids = tokenizer(text if text.endswith(eos) else text + eos)["input_ids"]
            lengths.append(min(len(ids), self.max_length) if self.max_length else len(ids))
        return lengths

    # -- the Trainer ----------------------------------------------------------------------------

    def trainer(self, *, model, tokenizer, args: Mapping[str, Any], train, evalset,
                lm_features: Callable[[Any, Any], Any] | None = None, **trainer_kwargs: Any):
        """A Trainer for this layout and this candidate, over raw task rows ``train`` and ``evalset``.

        ``train`` may be None (a zero-shot evaluation: nothing is trained). ``args`` are
        ``TrainingArguments`` keywords; ``lm_features`` maps ``(rows, tokenizer)`` to causal-LM
        features for plain text (the selector's cached preprocessing). Other keywords go to the
        Trainer (``callbacks``, ``compute_metrics``...; ``data_collator`` replaces the default one of
        plain text).
        """
        if is_encoder_decoder(model):
            self.check_candidate(getattr(model, "name_or_path", "") or "this", encoder_decoder=True)
            from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

            training = _make_args(Seq2SeqTrainingArguments, args)
            return Seq2SeqTrainer(model=model, args=training, processing_class=tokenizer,
                                  train_dataset=None if train is None else self.seq2seq_features(train, tokenizer),
                                  eval_dataset=self.seq2seq_features(evalset, tokenizer),
                                  data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), **trainer_kwargs)
        if self.layout == "text":
            from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

            features = lm_features or _lm_features(self)
            collator = trainer_kwargs.pop("data_collator", None) or DataCollatorForLanguageModeling(tokenizer, mlm=False)
            return Trainer(model=model, args=_make_args(TrainingArguments, args), processing_class=tokenizer,
                           train_dataset=None if train is None else features(train, tokenizer),
                           eval_dataset=features(evalset, tokenizer), data_collator=collator, **trainer_kwargs)
        from trl import SFTConfig, SFTTrainer

        # SFTConfig has defaults of its own (bf16, gradient checkpointing, learning rate 2e-5): every
        # candidate trains with TrainingArguments' defaults and training_args over them, alike.
        config = _make_args(SFTConfig, {**_trainer_defaults(SFTConfig), "max_length": self.max_length,
                                        "completion_only_loss": True, "dataset_num_proc": None, **args})
        eval_rows = self.sft_rows(evalset)
        # SFTTrainer wants a training set even to evaluate: a zero-shot run hands it the eval rows
        # and never calls train().
        return SFTTrainer(model=model, args=config, processing_class=tokenizer,
                          train_dataset=eval_rows if train is None else self.sft_rows(train),
                          eval_dataset=eval_rows, **trainer_kwargs)


def _make_args(cls, kwargs: Mapping[str, Any]):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        from .._utils import one_line

        raise LensLLMError(f"bad training arguments for {cls.__name__} ({one_line(error)}); fix training_args") \
            from None


def _trainer_defaults(cls) -> dict[str, Any]:
    """``TrainingArguments``' defaults of the fields whose defaults ``cls`` (a subclass) changes."""
    import dataclasses

    from transformers import TrainingArguments

    base = {f.name: f.default for f in dataclasses.fields(TrainingArguments)
            if f.init and f.default is not dataclasses.MISSING}
    return {f.name: base[f.name] for f in dataclasses.fields(cls)
            if f.init and f.name in base and f.default is not dataclasses.MISSING and f.default != base[f.name]}


def _lm_features(fmt: TaskFormat) -> Callable:
    def features(rows, tokenizer):
        def encode(batch):
            return tokenizer([_text(t) for t in batch[fmt.text_column]], truncation=True, max_length=fmt.max_length)

        return rows.map(encode, batched=True, remove_columns=rows.column_names, keep_in_memory=True)

    return features


def _split_conversation(messages: Any, row: int) -> tuple[list[Mapping[str, str]], str]:
    """(every message before the last assistant turn, that turn's content); one-line error if malformed."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise LensLLMError(f"row {row}: a conversation must be a non-empty list of {{'role', 'content'}} messages")
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise LensLLMError(f"row {row}: every message needs a 'role' and a 'content' string; fix that row")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise LensLLMError(f"row {row}: the conversation needs an assistant turn after at least one other message "
                           "(it is the completion the loss counts)")
    return list(messages[:last]), messages[last]["content"]


def _render(tokenizer, messages: Sequence[Mapping[str, str]]) -> str:
    return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)


def _plain_render(messages: Sequence[Mapping[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
