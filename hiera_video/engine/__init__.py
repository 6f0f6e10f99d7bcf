"""Engines: the jobs that compose models and data (training, pretraining, evaluation, prediction, extraction).

* :mod:`~hiera_video.engine.train` -- supervised training / fine-tuning (``train(cfg)``)
* :mod:`~hiera_video.engine.pretrain` -- MAE pretraining (``pretrain(cfg)``)
* :mod:`~hiera_video.engine.evaluate` -- multi-view evaluation (``evaluate(...)``, ``evaluate_run(...)``)
* :mod:`~hiera_video.engine.predict` -- top-k labels for files (``predict_files(...)``)
* :mod:`~hiera_video.engine.extract` -- clip feature extraction (its store: :mod:`~hiera_video.engine.feature_store`)
* :mod:`~hiera_video.engine.pipeline` -- ``load_model`` (path / name -> model) and ``eval_pipeline`` (clips +
  transform) for eval, predict and extract
* :mod:`~hiera_video.engine.demo` -- the CPU demo job
* building blocks: :mod:`~hiera_video.engine.loop` (the shared optimisation loop),
  :mod:`~hiera_video.engine.optim`, :mod:`~hiera_video.engine.checkpoint`, :mod:`~hiera_video.engine.sampler`,
  :mod:`~hiera_video.engine.distributed`, :mod:`~hiera_video.engine.logging`, :mod:`~hiera_video.engine.ema`,
  :mod:`~hiera_video.engine.build` (config -> model / datasets).

Submodules are imported on use, so ``import hiera_video`` stays light.
"""
