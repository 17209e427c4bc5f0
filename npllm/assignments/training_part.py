"""The gpt assignment's last part: train a tiny GPT with the student's own layers; the loss must fall.

The child runs ``tiny_gpt.train(student_module, seed)`` (the provided, pristine copy) and hands back
the copy loss of every step and the trained weights.  The grader does not trust the child's losses:
it re-scores the trained weights here with npllm's reference layers on a fresh batch, and the part
passes when that copy loss is below ``tiny_gpt.COPY_LOSS_THRESHOLD``.  Weights that only look trained
to a broken forward, or losses written by hand, do not pass.
"""
from __future__ import annotations

import functools
import types

from npllm import layers
from npllm.assignments.grading import Check
from npllm.assignments.plans import Plan


def load_provided(assignment, filename: str) -> types.ModuleType:
    """The teacher's provided module, from the installed package (never from a submission)."""
    module = types.ModuleType(filename.removesuffix(".py"))
    exec(compile(assignment.provided_sources()[filename], filename, "exec"), module.__dict__)
    return module


def reference_layers() -> types.SimpleNamespace:
    """npllm's layers under the names the gpt assignment's students write."""
    return types.SimpleNamespace(
        causal_self_attention_forward=functools.partial(layers.multi_head_attention_forward, causal=True),
        causal_self_attention_backward=layers.multi_head_attention_backward,
        layer_norm_forward=layers.layer_norm_forward, layer_norm_backward=layers.layer_norm_backward)


def train_plan(assignment, part, number: int, index: int, hidden: bool, seed: int, prefix: str) -> Plan:
    tiny_gpt = load_provided(assignment, "tiny_gpt.py")
    train_seed = (seed if hidden else 0) * 1000 + number * 10 + index
    names = ["copy losses", *tiny_gpt.PARAM_NAMES]
    call = {"id": prefix + "train", "function": "provided:tiny_gpt.train", "args": [{"student_module": True},
            train_seed], "kwargs": {}, "n_results": len(names), "result_names": names,
            "returns": ", ".join(names)}

    def judge(child):
        error = child.call_error(prefix + "train")
        if error:
            return [Check("values", False, error, "training")]
        copy_losses, *params = child.results(prefix + "train")
        try:
            rescored = tiny_gpt.evaluate(reference_layers(), params, seed=train_seed + 1)
        except (ValueError, TypeError, IndexError) as exc:
            return [Check("values", False, f"the trained weights are malformed: {exc}", "training")]
        verdict = "ok" if rescored < tiny_gpt.COPY_LOSS_THRESHOLD else "too high"
        message = (f"{verdict}: copy loss {copy_losses[0]:.3f} at step 1, {copy_losses[-1]:.4f} at step "
                   f"{len(copy_losses)}; the trained weights re-scored with npllm's layers: {rescored:.4f} "
                   f"(must be below {tiny_gpt.COPY_LOSS_THRESHOLD})")
        return [Check("values", verdict == "ok", message, "training")]

    return Plan(f"{tiny_gpt.STEPS} Adam steps, seed {train_seed}", [call], {}, ("values",), judge)
