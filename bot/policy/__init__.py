"""The policy: a bundle on disk (bundle.py: detector + Strategist + Tactician + Executor + the inference
settings) and the runner that steps the three models on each Observation (runner.py). Pure computation: it
sends no input.

May import: bot.errors, bot.profile, validation, perception, models. Never recordings, control or play.
"""
