"""Every metric's name, unit and description (`names`, `instruments`), the pre-aggregated counters and histograms
the request path records into, the gauges read at collection time, and GPU readings through NVML. Imports nothing
else of Vigil's.
"""
