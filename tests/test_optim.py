"""Specification of npllm.optim: each update rule against numbers worked out by hand from its formula."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from npllm.optim import SGD, Adam, AdamW, clip_grad_norm, cosine_lr, default_decay


def make_params():
    """A tiny model's params: a matrix, a bias, a LayerNorm gain and an embedding (float64 for exact math)."""
    return {
        "h.0.mlp.c_fc.weight": np.array([[1.0, -2.0], [0.5, 3.0]]),
        "h.0.mlp.c_fc.bias": np.array([0.1, -0.1]),
        "h.0.ln_1.weight": np.array([1.0, 1.0]),
        "wte.weight": np.array([[0.2, 0.4], [0.6, 0.8], [1.0, 1.2]]),
    }


def make_grads(seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(p.shape) for name, p in make_params().items()}


# --- SGD ----------------------------------------------------------------------------------------------

def test_sgd_step_is_p_minus_lr_g_and_keeps_array_identity():
    params, grads = make_params(), make_grads()
    before = {k: v.copy() for k, v in params.items()}
    identity = {k: id(v) for k, v in params.items()}
    SGD(lr=0.1).step(params, grads)
    for name in params:
        assert id(params[name]) == identity[name]
        assert_allclose(params[name], before[name] - 0.1 * grads[name], rtol=0, atol=1e-15)


def test_sgd_momentum_two_steps_by_hand():
    params = {"w": np.array([[1.0]])}
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step(params, {"w": np.array([[2.0]])})
    # buf = 2.0 ; p = 1 - 0.1 * 2 = 0.8
    assert_allclose(params["w"], [[0.8]], rtol=0, atol=1e-15)
    opt.step(params, {"w": np.array([[1.0]])})
    # buf = 0.9 * 2 + 1 = 2.8 ; p = 0.8 - 0.28 = 0.52
    assert_allclose(params["w"], [[0.52]], rtol=0, atol=1e-15)


def test_sgd_weight_decay_is_l2_on_matrices_only():
    params = {"w": np.array([[2.0]]), "b": np.array([2.0])}
    SGD(lr=0.1, weight_decay=0.5).step(params, {"w": np.array([[1.0]]), "b": np.array([1.0])})
    assert_allclose(params["w"], [[2.0 - 0.1 * (1.0 + 0.5 * 2.0)]], rtol=0, atol=1e-15)   # 1.8
    assert_allclose(params["b"], [2.0 - 0.1 * 1.0], rtol=0, atol=1e-15)                   # bias: no decay


# --- Adam / AdamW -------------------------------------------------------------------------------------

def test_adam_first_step_moves_each_weight_by_lr_times_sign_of_grad():
    params, grads = make_params(), make_grads()
    before = {k: v.copy() for k, v in params.items()}
    Adam(lr=0.01, eps=0.0).step(params, grads)
    # m_hat = g, v_hat = g^2, so the step is lr * g / |g| = lr * sign(g).
    for name in params:
        assert_allclose(params[name], before[name] - 0.01 * np.sign(grads[name]), rtol=0, atol=1e-15)


def test_adam_two_steps_by_hand():
    params = {"w": np.array([1.0])}
    opt = Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    opt.step(params, {"w": np.array([0.5])})
    opt.step(params, {"w": np.array([-1.0])})
    # step 1: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25; p = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8)
    # step 2: m = 0.9*0.05 + 0.1*(-1) = -0.055 ; v = 0.999*0.00025 + 0.001*1 = 0.00124975
    m2, v2 = -0.055, 0.00124975
    m_hat, v_hat = m2 / (1 - 0.9**2), v2 / (1 - 0.999**2)
    p2 = p1 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert_allclose(params["w"], [p2], rtol=1e-13)
    assert opt.step_count == 2


def test_adamw_decays_matrices_but_not_biases_layernorm_or_embeddings():
    params, grads = make_params(), make_grads()
    before = {k: v.copy() for k, v in params.items()}
    AdamW(lr=0.01, eps=0.0, weight_decay=0.1).step(params, grads)
    for name in params:
        decay = 1 - 0.01 * 0.1 if name == "h.0.mlp.c_fc.weight" else 1.0
        expected = before[name] * decay - 0.01 * np.sign(grads[name])   # decay first, then the Adam step
        assert_allclose(params[name], expected, rtol=0, atol=1e-15, err_msg=name)


def test_adamw_decay_true_decays_everything_and_callable_is_honoured():
    for decay, decayed in ((True, set(make_params())), (lambda name, a: name.startswith("wte"), {"wte.weight"})):
        params, grads = make_params(), make_grads()
        before = {k: v.copy() for k, v in params.items()}
        AdamW(lr=0.01, eps=0.0, weight_decay=0.5, decay=decay).step(params, grads)
        for name in params:
            factor = 1 - 0.01 * 0.5 if name in decayed else 1.0
            assert_allclose(params[name], before[name] * factor - 0.01 * np.sign(grads[name]), atol=1e-15)


def test_default_decay_rule():
    assert default_decay("h.3.attn.c_attn.weight", np.zeros((4, 12)))
    assert default_decay("lm_head.weight", np.zeros((4, 4)))
    assert not default_decay("h.3.attn.c_attn.bias", np.zeros(12))
    assert not default_decay("ln_f.weight", np.zeros(4))
    assert not default_decay("wte.weight", np.zeros((10, 4)))
    assert not default_decay("wpe.weight", np.zeros((8, 4)))
    assert not default_decay("embedding.weight", np.zeros((10, 4)))


def test_adamw_float32_params_stay_float32():
    params = {"w": np.ones((3, 3), dtype=np.float32)}
    AdamW(lr=1e-3).step(params, {"w": np.full((3, 3), 0.5, dtype=np.float32)})
    assert params["w"].dtype == np.float32


def test_step_lr_argument_overrides_for_that_step_only():
    params = {"w": np.array([1.0])}
    opt = SGD(lr=0.1)
    opt.step(params, {"w": np.array([1.0])}, lr=0.5)
    assert_allclose(params["w"], [0.5], atol=1e-15)
    assert opt.lr == 0.1
    opt.step(params, {"w": np.array([1.0])}, lr=0.0)   # a schedule may end at exactly 0
    assert_allclose(params["w"], [0.5], atol=1e-15)


# --- state_dict ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1, momentum=0.9, weight_decay=0.01),
                                      lambda: Adam(1e-2), lambda: AdamW(1e-2, weight_decay=0.1)],
                         ids=["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_bit_identically(make_opt):
    params = {k: v.astype(np.float32) for k, v in make_params().items()}
    grads = [{k: v.astype(np.float32) for k, v in make_grads(seed).items()} for seed in range(5)]
    opt = make_opt()
    for g in grads[:2]:
        opt.step(params, g)
    arrays, scalars = opt.state_dict()
    resumed_params = {k: v.copy() for k, v in params.items()}
    resumed = make_opt()
    resumed.load_state_dict(arrays, scalars, params=resumed_params)
    for g in grads[2:]:
        opt.step(params, g)
        resumed.step(resumed_params, g)
    for name in params:
        assert_array_equal(params[name], resumed_params[name])
    assert resumed.step_count == opt.step_count == 5


def test_state_dict_keys_and_scalars():
    params = make_params()
    opt = AdamW(3e-4)
    opt.step(params, make_grads())
    arrays, scalars = opt.state_dict()
    assert set(arrays) == {f"{b}.{n}" for b in ("m", "v") for n in params}
    assert scalars == {"type": "AdamW", "step": 1, "lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.99],
                       "eps": 1e-8}
    arrays["m.wte.weight"][...] = 123.0   # state_dict returns copies: editing them leaves the optimizer alone
    assert not np.any(opt.state["m"]["wte.weight"] == 123.0)


def test_load_state_dict_rejects_mismatched_keys_and_shapes():
    params = make_params()
    opt = Adam(1e-3)
    opt.step(params, make_grads())
    arrays, scalars = opt.state_dict()
    with pytest.raises(ValueError, match="unexpected key 'q.wte.weight'"):
        Adam(1e-3).load_state_dict({**arrays, "q.wte.weight": np.zeros(1)}, scalars)
    del arrays["v.wte.weight"]
    with pytest.raises(ValueError, match="same parameter names"):
        Adam(1e-3).load_state_dict(arrays, scalars)
    arrays, _ = opt.state_dict()
    bigger = {**params, "wte.weight": np.zeros((4, 2))}
    with pytest.raises(ValueError, match=r"m\.'wte\.weight'.*\(4, 2\).*\(3, 2\)"):
        Adam(1e-3).load_state_dict(arrays, scalars, params=bigger)
    with pytest.raises(ValueError, match="missing \\['extra'\\]"):
        Adam(1e-3).load_state_dict(arrays, scalars, params={**params, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="expected 'AdamW', got 'Adam'"):
        AdamW(1e-3).load_state_dict(arrays, scalars)


def test_step_rejects_grads_that_do_not_match_params():
    params = make_params()
    grads = make_grads()
    with pytest.raises(ValueError, match=r"missing \['wte.weight'\]"):
        AdamW(1e-3).step(params, {k: v for k, v in grads.items() if k != "wte.weight"})
    with pytest.raises(ValueError, match=r"grads\['wte.weight'\]: expected shape \(3, 2\), got \(2, 3\)"):
        AdamW(1e-3).step(params, {**grads, "wte.weight": np.zeros((2, 3))})
    opt = AdamW(1e-3)
    opt.step(params, grads)
    with pytest.raises(ValueError, match="optimizer state is for other names"):
        opt.step({"other": np.zeros(2)}, {"other": np.zeros(2)})


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_constructor_rejects_non_positive_or_non_finite_lr(lr):
    for cls in (SGD, Adam, AdamW):
        with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
            cls(lr)


@pytest.mark.parametrize("lr", [-1e-3, float("nan"), float("inf")])
def test_step_rejects_negative_or_non_finite_lr(lr):
    with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
        SGD(0.1).step({"w": np.zeros(1)}, {"w": np.zeros(1)}, lr=lr)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="betas"):
        Adam(0.1, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay"):
        AdamW(0.1, weight_decay=-0.1)
    with pytest.raises(TypeError, match="decay"):
        AdamW(0.1, decay="matrices")


# --- clipping -----------------------------------------------------------------------------------------

def test_clip_grad_norm_returns_global_norm_and_scales_in_place():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}   # global norm 5
    a = grads["a"]
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert norm == 5.0
    assert grads["a"] is a
    assert_allclose(grads["a"], [3.0 / (5.0 + 1e-6)], rtol=1e-15)
    assert_allclose(grads["b"], [[4.0 / (5.0 + 1e-6)]], rtol=1e-15)
    assert_allclose(math.hypot(grads["a"][0], grads["b"][0, 0]), 1.0, rtol=1e-6)


def test_clip_grad_norm_leaves_small_grads_and_disabled_clipping_alone():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, max_norm=10.0) == 5.0
    assert clip_grad_norm(grads, max_norm=0.0) == 5.0
    assert_array_equal(grads["a"], [3.0])
    assert_array_equal(grads["b"], [[4.0]])


def test_clip_grad_norm_non_finite_norm_is_returned_and_grads_untouched():
    grads = {"a": np.array([np.nan, 1.0]), "b": np.array([2.0])}
    assert math.isnan(clip_grad_norm(grads, 1.0))
    assert_array_equal(grads["b"], [2.0])
    assert math.isinf(clip_grad_norm({"a": np.array([np.inf])}, 1.0))


def test_clip_grad_norm_float32_large_values_do_not_overflow():
    grads = {"a": np.full(4, 1e20, dtype=np.float32)}   # float32 squares would overflow to inf
    assert_allclose(clip_grad_norm(grads, 1.0), 2e20, rtol=1e-6)
    assert grads["a"].dtype == np.float32
    assert_allclose(np.linalg.norm(grads["a"].astype(np.float64)), 1.0, rtol=1e-6)


# --- schedule -----------------------------------------------------------------------------------------

SCHEDULE = dict(lr=6e-4, min_lr=6e-5, warmup_iters=10, lr_decay_iters=100)


def test_cosine_lr_matches_nanogpt_at_the_endpoints():
    assert cosine_lr(0, **SCHEDULE) == 6e-4 * 1 / 11
    assert cosine_lr(9, **SCHEDULE) == 6e-4 * 10 / 11
    assert cosine_lr(10, **SCHEDULE) == 6e-4                     # cos(0) = 1: the peak
    assert_allclose(cosine_lr(55, **SCHEDULE), (6e-4 + 6e-5) / 2, rtol=1e-12)   # half way: cos(pi/2) = 0
    assert cosine_lr(100, **SCHEDULE) == 6e-5
    assert cosine_lr(10_000, **SCHEDULE) == 6e-5


def test_cosine_lr_rises_during_warmup_then_falls():
    warmup = [cosine_lr(i, **SCHEDULE) for i in range(10)]
    decay = [cosine_lr(i, **SCHEDULE) for i in range(10, 101)]
    assert all(a < b for a, b in zip(warmup, warmup[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert warmup[-1] < decay[0]


def test_cosine_lr_without_warmup_and_with_equal_warmup_and_decay():
    assert cosine_lr(0, lr=1.0, min_lr=0.1, warmup_iters=0, lr_decay_iters=10) == 1.0
    assert cosine_lr(5, lr=1.0, min_lr=0.1, warmup_iters=5, lr_decay_iters=5) == 0.1


def test_cosine_lr_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_lr"):
        cosine_lr(0, lr=1e-3, min_lr=1e-2, warmup_iters=0, lr_decay_iters=10)
    with pytest.raises(ValueError, match="lr_decay_iters"):
        cosine_lr(0, lr=1e-3, min_lr=0, warmup_iters=20, lr_decay_iters=10)
    with pytest.raises(ValueError, match="it: expected >= 0"):
        cosine_lr(-1, **SCHEDULE)
