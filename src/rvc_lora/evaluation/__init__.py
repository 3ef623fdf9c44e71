"""Score a trained voice on held-out utterances (``python eval.py``): reconstruction of the
target's own audio and conversion of a parallel source speaker, written to ``eval.json``."""
