"""Naev 0.8.2 (Debian's `naev`) as a game the project drives: a private data overlay with the scenario and the
ground-truth probe (overlay.py, data/), the running game (session.py), the probe's reader (probe.py,
sprites.py), the scripted pilot (pilot.py), one episode (episode.py), and what the commands call (adapter.py).
"""
