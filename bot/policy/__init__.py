"""The policy: a bundle on disk (detector + Strategist + Tactician + Executor) and the runner that steps the
three models on each Observation. Pure computation: it sends no input.

May import: bot.errors, bot.profile, perception, models. Never recordings, control or play.
"""
