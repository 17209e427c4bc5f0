"""Optimizers, gradient clipping and the learning-rate schedule.

Every optimizer works on the model's flat ``params`` dict (``dict[str, ndarray]``) and a ``grads`` dict
with the same names and shapes, and updates the arrays IN PLACE: the model reads its weights from the
dict on every call, so the arrays must keep their identity.  State (momentum, Adam moments) is kept per
parameter name and saved with :meth:`state_dict` so a resumed run continues bit for bit.

- SGD with momentum: Sutskever et al., "On the importance of initialization and momentum", ICML 2013
  (PyTorch's form: ``buf = momentum * buf + g``, ``p -= lr * buf``).
- Adam: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 1, with the bias
  correction written as PyTorch does it.
- AdamW: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (``p -= lr * wd * p``
  before the Adam step, as ``torch.optim.AdamW``).

Which parameters decay (:func:`default_decay`): weight matrices (2-D and up) do; biases, LayerNorm
gains/biases (1-D) and the token/position embeddings do not, as in nanoGPT and GPT-2 recipes — decaying
an embedding row shrinks rarely seen tokens towards zero, and decaying a LayerNorm gain fights the
normalisation.  Pass ``decay=True`` to decay everything, ``decay=False`` for nothing, or a callable
``decay(name, array) -> bool`` for your own rule.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

Params = dict[str, np.ndarray]
DecayRule = Callable[[str, np.ndarray], bool]

_EMBEDDING_MARKERS = ("wte", "wpe", "embedding", "embed")


def default_decay(name: str, array: np.ndarray) -> bool:
    """True for weight matrices (ndim >= 2); False for 1-D biases/LayerNorm params and embeddings."""
    if any(marker in name for marker in _EMBEDDING_MARKERS):
        return False
    if name.endswith(("ln.weight", "ln.bias")) or ".ln_" in name or name.startswith("ln_"):
        return False  # LayerNorm parameters are 1-D anyway; the name check keeps the rule obvious
    return array.ndim >= 2


def _resolve_decay(decay: bool | DecayRule | None) -> DecayRule:
    if decay is None:
        return default_decay
    if decay is True:
        return lambda name, array: True
    if decay is False:
        return lambda name, array: False
    if callable(decay):
        return decay
    raise TypeError(f"decay: expected None, True, False or a callable (name, array) -> bool, got {decay!r}")


def _check_lr(lr, *, allow_zero: bool) -> float:
    lr = float(lr)
    if not math.isfinite(lr) or lr < 0 or (lr == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"lr: expected a finite number {bound}, got {lr}")
    return lr


def _check_grads(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    """Raise ValueError unless grads has exactly the names and shapes of params."""
    missing = sorted(set(params) - set(grads))
    unexpected = sorted(set(grads) - set(params))
    if missing or unexpected:
        raise ValueError(f"grads: names must match params; missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, param in params.items():
        if grads[name].shape != param.shape:
            raise ValueError(f"grads[{name!r}]: expected shape {param.shape}, got {grads[name].shape}")


class Optimizer:
    """Shared bookkeeping: per-name state buffers, step count, state_dict / load_state_dict."""

    buffer_names: tuple[str, ...] = ()   # state arrays kept per parameter, saved as "<buffer>.<param>"

    def __init__(self, lr: float, weight_decay: float, decay: bool | DecayRule | None):
        self.lr = _check_lr(lr, allow_zero=False)
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay: expected a finite number >= 0, got {weight_decay}")
        self.weight_decay = float(weight_decay)
        self.decay = _resolve_decay(decay)
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.buffer_names}

    def hyperparameters(self) -> dict:
        """The scalars that define the update rule (JSON-able)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def step(self, params: Params, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Update every array of params in place from grads (same names and shapes); lr overrides self.lr."""
        lr = self.lr if lr is None else _check_lr(lr, allow_zero=True)  # a schedule may reach exactly 0
        _check_grads(params, grads)
        self._ensure_state(params)
        self.step_count += 1
        for name, param in params.items():
            grad = np.asarray(grads[name], dtype=param.dtype)
            decays = self.weight_decay > 0 and self.decay(name, param)
            self._update(name, param, grad, lr, decays)

    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float, decays: bool) -> None:
        raise NotImplementedError

    def _ensure_state(self, params: Params) -> None:
        """Create zero buffers on the first step; afterwards insist the state matches params."""
        for buffer in self.buffer_names:
            store = self.state[buffer]
            if not store:
                for name, param in params.items():
                    store[name] = np.zeros_like(param)
                continue
            if set(store) != set(params):
                missing = sorted(set(params) - set(store))
                unexpected = sorted(set(store) - set(params))
                raise ValueError(f"params: optimizer state is for other names; no state for {missing[:5]}, "
                                 f"state without a param {unexpected[:5]}")
            for name, param in params.items():
                if store[name].shape != param.shape or store[name].dtype != param.dtype:
                    raise ValueError(f"params[{name!r}]: optimizer state has {store[name].dtype}"
                                     f"{store[name].shape}, param is {param.dtype}{param.shape}")

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays keyed "<buffer>.<param>", e.g. "m.h.0.attn.c_attn.weight"; JSON-able scalars)."""
        arrays = {f"{buffer}.{name}": value.copy()
                  for buffer in self.buffer_names for name, value in self.state[buffer].items()}
        scalars = {"type": type(self).__name__, "step": self.step_count, **self.hyperparameters()}
        return arrays, scalars

    def load_state_dict(self, arrays: Mapping[str, np.ndarray], scalars: Mapping,
                        params: Params | None = None) -> None:
        """Restore what state_dict returned (step, hyperparameters, buffers); check against params if given."""
        if scalars.get("type") != type(self).__name__:
            raise ValueError(f"scalars['type']: expected {type(self).__name__!r}, got {scalars.get('type')!r}")
        expected = set(self.hyperparameters()) | {"type", "step"}
        if set(scalars) != expected:
            raise ValueError(f"scalars: expected keys {sorted(expected)}, got {sorted(scalars)}")
        state: dict[str, dict[str, np.ndarray]] = {buffer: {} for buffer in self.buffer_names}
        for key, value in arrays.items():
            buffer, _, name = key.partition(".")
            if buffer not in state or not name:
                raise ValueError(f"arrays: unexpected key {key!r}; expected '<buffer>.<param>' with buffer "
                                 f"in {list(self.buffer_names)}")
            state[buffer][name] = np.array(value, copy=True)
        names = [set(store) for store in state.values()]
        if any(n != names[0] for n in names):
            raise ValueError(f"arrays: buffers {list(self.buffer_names)} must cover the same parameter names")
        for name in names[0] if names else ():
            shapes = {state[buffer][name].shape for buffer in self.buffer_names}
            if len(shapes) != 1:
                raise ValueError(f"arrays: buffers for {name!r} have different shapes {sorted(shapes)}")
        if params is not None and names and names[0]:
            missing, unexpected = sorted(set(params) - names[0]), sorted(names[0] - set(params))
            if missing or unexpected:
                raise ValueError(f"arrays: names do not match params; missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
            for name, param in params.items():
                got = state[self.buffer_names[0]][name]
                if got.shape != param.shape or got.dtype != param.dtype:
                    raise ValueError(f"arrays[{self.buffer_names[0]}.{name!r}]: expected {param.dtype}"
                                     f"{param.shape}, got {got.dtype}{got.shape}")
        step = int(scalars["step"])
        if step < 0 or (step > 0 and self.buffer_names and not names[0]):
            raise ValueError(f"scalars['step']: {step} steps taken but no state arrays given")
        self._set_hyperparameters(scalars)
        self.step_count = step
        self.state = state

    def _set_hyperparameters(self, scalars: Mapping) -> None:
        weight_decay = float(scalars["weight_decay"])
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"scalars['weight_decay']: expected a finite number >= 0, got {weight_decay}")
        self.lr = _check_lr(scalars["lr"], allow_zero=False)
        self.weight_decay = weight_decay


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled, L2) weight decay, as torch.optim.SGD."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 decay: bool | DecayRule | None = None):
        if not (0.0 <= momentum < 1.0):
            raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
        self.momentum = float(momentum)
        self.buffer_names = ("velocity",) if momentum > 0 else ()
        super().__init__(lr, weight_decay, decay)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "momentum": self.momentum}

    def _set_hyperparameters(self, scalars: Mapping) -> None:
        if float(scalars["momentum"]) != self.momentum:
            raise ValueError(f"scalars['momentum']: saved {scalars['momentum']}, this optimizer has "
                             f"{self.momentum} (momentum decides which state arrays exist)")
        super()._set_hyperparameters(scalars)

    def _update(self, name, param, grad, lr, decays):
        if decays:
            grad = grad + self.weight_decay * param           # L2 penalty: gradient of wd/2 * ||p||^2
        if self.momentum > 0:
            velocity = self.state["velocity"][name]
            velocity *= self.momentum
            velocity += grad                                   # buf = momentum * buf + g
            grad = velocity
        param -= lr * grad


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) -> None:
    """One AdamW step on one array, in place: param, m, v (same shape) from grad; step counts from 1.

    The reference for the backends' fused kernels (``npllm_kernels.cpu.adamw_update``).  The arithmetic
    is torch.optim.AdamW's, in the same order:
        p *= 1 − lr·wd                          (decoupled decay first; wd = 0 for Adam / no decay)
        m = β₁ m + (1 − β₁) g,   v = β₂ v + (1 − β₂) g²
        p −= lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
    Every operation writes into m, v, param or one scratch array: a plain expression would allocate
    about six param-sized temporaries per array per step (7–10 ms a step for the bench's GPT).
    """
    if weight_decay != 0:
        # Decoupled: shrink the weight directly instead of adding wd * p to the gradient, so the decay
        # is not rescaled by Adam's per-coordinate step size (torch.optim.AdamW does the same).
        param *= 1 - lr * weight_decay
    tmp = np.empty_like(param)
    m *= beta1
    m += np.multiply(grad, 1 - beta1, out=tmp)            # first moment: running mean of g
    v *= beta2
    np.multiply(grad, grad, out=tmp)
    tmp *= 1 - beta2
    v += tmp                                               # second moment: running mean of g^2
    # m and v start at zero, so early averages are biased towards 0; dividing by 1 - beta^t undoes it.
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    denom = np.sqrt(v, out=tmp)
    denom /= math.sqrt(bias_correction2)
    denom += eps
    update = np.divide(m, denom, out=tmp)
    update *= lr / bias_correction1
    param -= update


def _adamw_function():
    """The selected backend's ``adamw_update`` (a fused kernel), or the reference above if it has none."""
    from npllm import backend
    return getattr(backend._load(backend.get_backend()), "adamw_update", None) or adamw_update


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with PyTorch's bias correction; no weight decay (use AdamW)."""

    buffer_names = ("m", "v")

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self._set_betas_eps(betas, eps)
        super().__init__(lr, weight_decay=0.0, decay=False)

    def _set_betas_eps(self, betas, eps) -> None:
        beta1, beta2 = (float(b) for b in betas)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {tuple(betas)}")
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps: expected a finite number >= 0, got {eps}")
        self.betas = (beta1, beta2)
        self.eps = float(eps)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps}

    def _set_hyperparameters(self, scalars: Mapping) -> None:
        self._set_betas_eps(scalars["betas"], scalars["eps"])
        super()._set_hyperparameters(scalars)

    def step(self, params: Params, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Update every array of params in place from grads (same names and shapes); lr overrides self.lr."""
        self._adamw_update = _adamw_function()      # the selected backend's fused kernel, or the reference
        super().step(params, grads, lr)

    def _update(self, name, param, grad, lr, decays):
        beta1, beta2 = self.betas
        weight_decay = self.weight_decay if decays else 0.0
        self._adamw_update(param, grad, self.state["m"][name], self.state["v"][name], lr, beta1, beta2,
                           self.eps, weight_decay, self.step_count)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p -= lr * wd * p before the Adam step."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.1, decay: bool | DecayRule | None = None):
        self._set_betas_eps(betas, eps)
        Optimizer.__init__(self, lr, weight_decay, decay)


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Global L2 norm over all grads (before clipping); scale grads in place if it exceeds max_norm > 0."""
    # Accumulate in float64: a float32 sum of squares over millions of entries loses digits or overflows.
    total = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values())
    norm = math.sqrt(total)
    if not math.isfinite(norm):
        return norm                # the training loop stops on it; scaling would spread NaN everywhere
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)   # PyTorch's clip_grad_norm_ epsilon
        for g in grads.values():
            g *= scale
    return norm


def cosine_lr(it: int, *, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int) -> float:
    """nanoGPT's get_lr: linear warmup over warmup_iters, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if it < 0:
        raise ValueError(f"it: expected >= 0, got {it}")
    if not (0 <= min_lr <= lr):
        raise ValueError(f"min_lr: expected 0 <= min_lr <= lr={lr}, got {min_lr}")
    if warmup_iters < 0 or lr_decay_iters < warmup_iters:
        raise ValueError(f"lr_decay_iters: expected >= warmup_iters={warmup_iters} >= 0, got {lr_decay_iters}")
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:       # nanoGPT uses '>'; at equality its cosine gives min_lr exactly too
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))   # goes 1 -> 0
    return min_lr + coeff * (lr - min_lr)
