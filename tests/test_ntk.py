"""The NTK probe: Theta against autograd, the sketch, PEFT, seq2seq, state left untouched, and F."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from lensllm_hf.callbacks.ntk import empirical_ntk, ntk_F
from tiny_models import (lm_collator, make_text_dataset, make_tiny_gpt2, make_tiny_t5, make_tokenizer,
                         seq2seq_collator, tokenize_lm, tokenize_seq2seq)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def lm_batch(tok):
    ds = tokenize_lm(make_text_dataset(8, seed=3), tok)
    return dict(lm_collator(tok)([ds[i] for i in range(8)]))


def load_gpt2(path, attn_implementation="eager"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)


def reference(model, batch):
    """Theta and r one example at a time with plain autograd."""
    was = model.training
    model.eval()
    grads, losses = [], []
    for i in range(next(iter(batch.values())).shape[0]):
        model.zero_grad(set_to_none=True)
        out = model(**{k: v[i:i + 1] for k, v in batch.items()})
        out.loss.backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad]))
        losses.append(out.loss.item())
    model.zero_grad(set_to_none=True)
    model.train(was)
    G = torch.stack(grads).double()
    return (G @ G.T).numpy(), np.array(losses)


def test_exact_theta_matches_autograd_and_chunking(gpt2_path, lm_batch):
    model = load_gpt2(gpt2_path)
    probe = empirical_ntk(model, lm_batch)
    theta, r = reference(model, lm_batch)
    assert probe.method == "vmap" and probe.projection_dim is None and probe.k == 8
    np.testing.assert_allclose(probe.gram, theta, rtol=1e-4, atol=1e-4 * np.abs(theta).max())
    np.testing.assert_allclose(probe.r, r, rtol=1e-5)
    np.testing.assert_allclose(probe.eigenvalues, np.clip(np.linalg.eigvalsh(theta), 0, None), rtol=1e-3, atol=1e-3)
    assert min(probe.eigenvalues) >= 0 and probe.n_params == sum(p.numel() for p in model.parameters())
    chunked = empirical_ntk(model, lm_batch, chunk_size=3)
    np.testing.assert_allclose(chunked.gram, probe.gram, rtol=1e-5, atol=1e-6 * np.abs(theta).max())
    # SDPA's mask helpers branch on tensor values, which vmap cannot trace: the probe takes one
    # example at a time, leaves the attention as it is, and measures the same Theta.
    sdpa = load_gpt2(gpt2_path, attn_implementation="sdpa")
    looped = empirical_ntk(sdpa, lm_batch)
    assert looped.method == "loop"
    np.testing.assert_allclose(looped.gram, probe.gram, rtol=1e-4, atol=1e-5 * np.abs(theta).max())
    # F at t = 0 is ||r||^2, whatever the spectrum.
    assert probe.F(eta=1e-3, t=0) == pytest.approx(float(np.sum(r**2)), rel=1e-6)


def test_sketched_theta_is_close_to_exact(gpt2_path, lm_batch):
    model = load_gpt2(gpt2_path)
    exact = np.array(empirical_ntk(model, lm_batch).gram)
    sketched = empirical_ntk(model, lm_batch, projection_dim=16384, seed=1)
    assert sketched.projection_dim == 16384
    assert np.abs(np.array(sketched.gram) - exact).max() / np.abs(exact).max() < 0.06
    # A small memory budget switches to the sketch by itself, and keeps the chunk small.
    auto = empirical_ntk(model, lm_batch, max_memory_mb=1.0)
    assert auto.projection_dim is not None
    assert np.abs(np.array(auto.gram) - exact).max() / np.abs(exact).max() < 0.1
    # The sketch does not depend on how examples are chunked, and its width must be a power of two.
    whole = empirical_ntk(model, lm_batch, projection_dim=4096, seed=2)
    chunked = empirical_ntk(model, lm_batch, projection_dim=4096, seed=2, chunk_size=3)
    np.testing.assert_allclose(whole.gram, chunked.gram, rtol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        empirical_ntk(model, lm_batch, projection_dim=5000)


def test_probe_leaves_model_rng_and_grads_as_they_were(gpt2_path, lm_batch):
    model = load_gpt2(gpt2_path)
    model.train()
    model.transformer.h[0].eval()  # a user's own per-module mode survives
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    empirical_ntk(model, lm_batch)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]
    assert model.training and not model.transformer.h[0].training and model.transformer.h[1].training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_kernel_torch_func_cannot_transform_falls_back_to_plain_autograd(gpt2_path, lm_batch):
    """An autograd Function without setup_context (as flash-attention's kernels are written)
    cannot run under vmap or grad: the probe takes plain autograd, one example at a time."""

    class OldStyleScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, grad):
            return grad

    class Kernel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **inputs):
            out = self.inner(**inputs)
            out.loss = OldStyleScale.apply(out.loss)
            return out

    model = Kernel(load_gpt2(gpt2_path))
    probe = empirical_ntk(model, lm_batch)
    theta, r = reference(model, lm_batch)
    assert probe.method == "loop"
    np.testing.assert_allclose(probe.gram, theta, rtol=1e-4, atol=1e-4 * np.abs(theta).max())
    np.testing.assert_allclose(probe.r, r, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_seq2seq_t5(tmp_path, tok):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(make_tiny_t5(tmp_path / "t5"))
    ds = tokenize_seq2seq(make_text_dataset(6, seed=4), tok)
    batch = dict(seq2seq_collator(tok, model)([ds[i] for i in range(6)]))
    probe = empirical_ntk(model, batch)
    theta, r = reference(model, batch)
    # T5's encoder mask helper branches on tensor values, which vmap cannot trace: one at a time.
    assert probe.method == "loop"
    np.testing.assert_allclose(probe.gram, theta, rtol=1e-4, atol=1e-4 * np.abs(theta).max())
    np.testing.assert_allclose(probe.r, r, rtol=1e-5)


def test_peft_lora_probes_only_the_adapter(gpt2_path, lm_batch):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_gpt2(gpt2_path), LoraConfig(r=4, target_modules=["c_attn"], lora_dropout=0.1,
                                                           task_type="CAUSAL_LM"))
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    probe = empirical_ntk(model, lm_batch)
    again = empirical_ntk(model, lm_batch)
    assert probe.n_params == trainable
    # A fresh LoRA has lora_B = 0, so lora_A's gradients are exactly zero (2 layers: 2 tensors).
    assert probe.zero_gradient_parameters == 2
    assert max(probe.eigenvalues) > 0
    assert probe.gram == again.gram  # dropout is off in the probe (eval mode): deterministic
    assert model.training and all(p.grad is None for p in model.parameters())
    theta, _ = reference(model, lm_batch)
    np.testing.assert_allclose(probe.gram, theta, rtol=1e-4, atol=1e-4 * np.abs(theta).max())


def test_bad_probe_inputs(gpt2_path, lm_batch):
    model = load_gpt2(gpt2_path)
    with pytest.raises(ValueError, match="need labels"):
        empirical_ntk(model, {k: v for k, v in lm_batch.items() if k != "labels"})
    with pytest.raises(ValueError, match="no tensors"):
        empirical_ntk(model, {"text": ["a"]})
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        empirical_ntk(model, lm_batch)
    model = load_gpt2(gpt2_path)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        empirical_ntk(model, lm_batch)


# -- F ------------------------------------------------------------------------------------------


def test_F_is_numerically_safe():
    assert ntk_F([0.0, 2.0], [1.0, 1.0], eta_t=1e300) == 1.0  # no overflow, the null direction stays
    assert ntk_F([1e300, 1e300], [3.0, 4.0], eta_t=1e300) == 0.0
    assert ntk_F([-1e-9, 5.0], [2.0, 0.0], eta_t=10.0) == 4.0  # round-off negatives are clipped: F <= ||r||^2
    assert ntk_F([1.0], [2.0], eta_t=0.0) == 4.0
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="eta"):
            ntk_F([1.0], [1.0], eta_t=bad)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000), st.floats(0.0, 50.0))
def test_F_matches_the_matrix_exponential(k, seed, eta_t):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k))
    theta = A @ A.T
    r = rng.normal(size=k) * 3
    lam, V = np.linalg.eigh(theta)
    F = ntk_F(lam, V.T @ r, eta_t)
    direct = float(np.sum((expm(-eta_t * theta) @ r) ** 2))
    assert F == pytest.approx(direct, rel=1e-6, abs=1e-9)
    assert 0.0 <= F <= float(r @ r) * (1 + 1e-9)
    assert ntk_F(lam, V.T @ r, eta_t * 2) <= F + 1e-12  # training only removes residual
    assert math.isfinite(F)
