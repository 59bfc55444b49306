"""The parts of one proxy trial that :func:`autoloss_ray.train.run_trial` puts together.

- :mod:`.config`: :class:`~.config.TrialConfig` (every key a trial's config may hold) and
  :func:`~.config.check_trial_config` (every check before compute), the seeds of search trials;
- :mod:`.build`: the device, the data and the loss of a trial;
- :mod:`.loop`: the pieces of the training loop (sampler, autocast, the GPU speed options,
  the batches, the host reads of the loss);
- :mod:`.evaluation`: :func:`~.evaluation.evaluate_model`, the six exact metrics of a model.

The public names are re-exported by :mod:`autoloss_ray.train`, the import path users know.
"""
