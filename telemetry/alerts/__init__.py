"""Alerting: rule kinds and their validation, the engine and the pending → firing → resolved lifecycle, anomaly
and trend detectors, the values rules watch, SLO burn rates, the alert loop and delivery to Alertmanager. May
import `metrics`, `quality` and `stream`.
"""
