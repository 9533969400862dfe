"""Perception: a game frame in, an Observation out (capture, YOLO detector, ByteTrack, HUD, cues, state).

May import: bot.errors, bot.profile, models, arena (an in-process frame source). Never recordings or play.
"""
