"""Play: the live loop (`pilot run`: run.py, live.py, latency.py), evaluation against the expert
(`pilot eval`), demonstrations, DAgger, the overlay and the demo. The top of the runtime.

May import every other subpackage of bot, models and arena. Never training or vlm_labeling.
"""
