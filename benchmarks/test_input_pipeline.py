"""The custom loop's step over a slice-and-batch `tf.data` pipeline with TensorFlow's autotuning
on (the default) and off (what `train` sets for arrays: `spec_impl.trainer.fit_data.untuned_options`),
beside the step on one fixed batch, interleaved.

On a 2-core CPU, with autotuning on, MiniInception's loop step stalled at about 1.2-1.7x the
fixed-batch step in most rounds; with it off, the loop step is within a few percent of it. The
ratios' verdicts say what it does on this machine.
"""

import tensorflow as tf

from benchmarks.conftest import record
from spec_impl.bench import build_workload, interleaved, loop_runner, make_trainer, same_batch_runner
from spec_impl.bench.stats import compare
from spec_impl.trainer.fit_data import untuned_options

NAME = "mini_inception"


def sliced(workload, steps, autotune):
    """The batch repeated `steps` times, sliced into samples and batched again, as
    `from_tensor_slices(arrays).batch(b)` pipelines do."""
    copies = lambda t: tf.concat([t] * steps, axis=0)  # noqa: E731  (a one-line helper)
    dataset = tf.data.Dataset.from_tensor_slices(
        (copies(workload.x), copies(workload.y))).batch(workload.batch_size)
    options = untuned_options()
    options.autotune.enabled = autotune
    return dataset.with_options(options)


def test_mini_inception_input_pipeline(benchmark, settings):
    benchmark.group = f"input_pipeline:{NAME}"
    steps = settings.steps(NAME)
    workload = build_workload(NAME)
    trainer = make_trainer(workload, "function")
    pipelines = {"autotune_off": sliced(workload, steps, False),
                 "autotune_on": sliced(workload, steps, True)}
    assert [d.options().autotune.enabled for d in pipelines.values()] == [False, True]
    runners = {"fixed_batch": same_batch_runner(trainer, workload, steps),
               **{name: loop_runner(trainer, d) for name, d in pipelines.items()}}
    times = benchmark.pedantic(lambda: interleaved(runners, settings.rounds(NAME), settings.warmup),
                               rounds=1, iterations=1)
    ratios = [compare(NAME, "autotune_on", "autotune_off", times),
              compare(NAME, "autotune_off", "fixed_batch", times)]
    record(benchmark, ratios=ratios)
