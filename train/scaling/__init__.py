"""muP and scaling diagnostics, on the trainer's one optimizer step (train/step.py) and
the token reader of train/data.py:

    coord_check   activations against width, muP and standard parameterization
    mup_sweep     learning-rate transfer across width (settings in sweep_config, one trial in sweep_trial)
    collapse      loss-curve collapse of a model family
    early_stop    predicting a run's final loss from its first part

Shared pieces: widths (a model at a given width), runs (reading a run folder), curves
(smoothing, L(T), normalization, the family curve), figures (the PNGs) and cli (the
command line of every experiment).
"""
