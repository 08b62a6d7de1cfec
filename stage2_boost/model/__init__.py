"""The saved model: what a training run keeps (``OUT/stage2/model/``), and scoring new images.

save      write the model folder atomically (manifest with checksums, native booster files)
load      read and verify it; runs no code from the folder
score     rebuild features for new rows with the fitted fold state, predict, blend, calibrate
explain   TreeSHAP contributions grouped by feature group
calibration   the batch-independent blend and its Platt calibration
"""
