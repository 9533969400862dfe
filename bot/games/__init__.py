"""Games: one YAML profile per game (read by bot.profile) and, for games the project drives, an adapter that
starts the game, reaches a scenario, probes its ground truth, plays it scripted and scores it.

Adapters may import perception, recordings and control; play imports them.
"""
