"""Training: ONE loop for every model, with the task (language modelling or seq2seq) supplying batches,
loss, evaluation and checkpoint content.

- :mod:`~npllm.training.config`: :class:`TrainConfig`, every setting of a run, and how a resumed run may change it;
- :mod:`~npllm.training.run`: :class:`Run`, the state the loop carries, saved whole in one checkpoint;
- :mod:`~npllm.training.loop`: :func:`train`, the loop (schedule, evaluation, early stop, Ctrl-C, non-finite stops);
- :mod:`~npllm.training.lm` and :mod:`~npllm.training.seq2seq`: the two tasks;
- :mod:`~npllm.training.outdir`: the output directory's lock and safety checks.

From Python::

    from npllm.training import TrainConfig, start_run, train
    run, _ = start_run(TrainConfig(model="lstm", max_iters=200, no_progress=True), resume=False, out_dir=Path("out"))
    status = train(run)        # "done" | "early" | "interrupted" | "diverged" | "write_failed"
"""
from npllm.training.config import TrainConfig
from npllm.training.loop import summarize, train
from npllm.training.run import Run, save_run, start_run

__all__ = ["TrainConfig", "Run", "start_run", "save_run", "train", "summarize"]
