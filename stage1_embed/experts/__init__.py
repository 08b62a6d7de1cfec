"""The expert stage: CNNs fine-tuned inside the patient folds, stacked by stage 2.

For each evaluation fold of stage 2 (the same fold file), a backbone is fine-tuned on the fold's
training part (plus any extra training data), its epoch chosen on an inner patient split of that
training part, and it predicts the fold's held-out images (out-of-fold probabilities) and the test
images (mean over the fold models). Output: ``OUT/experts/<slug>.parquet`` with provenance.

recipe   the training recipe and its per-device defaults
images   decoding once into memory, augmentation, balanced loss
fold     one fold: train with checkpoints (resumable), choose the epoch, predict
stage    all folds: caching, one fold per process, assembly, provenance
"""
