"""Defences against top-k multi-label attacks, called on a researcher's own model.

Certified robustness by randomised smoothing (:mod:`tkmia.defences.smoothing`, MultiGuard) and
input purification with its adaptive evaluation (:mod:`tkmia.defences.purification`). Adversarial
fine-tuning is a configuration of the training loop (:func:`tkmia.training.train_model`).
"""
