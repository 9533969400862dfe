"""Recordings: episodes on disk (one writer, one reader), their video, labels, recording human play, and the
perception stored beside an episode (`pilot perceive`).

May import: bot.errors, bot.profile, perception. Never policy, control or play.
"""
