"""Prediction quality of classifiers: the monitor (class mix, confidence, feedback accuracy, the label-free
estimate and drift), ground-truth outcomes, calibration, drift statistics, windows of recent rows, reference
profiles, what the stream and gauges read, and versions compared side by side. May import `calls`, `metrics`,
`stream` (histogram arithmetic) and `vigil.protos`.
"""
