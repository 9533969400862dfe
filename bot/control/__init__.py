"""Control: the only code that sends input to the operating system (pynput), humanised, confined to the game
region, with start/pause/kill hotkeys.

May import: bot.errors, bot.profile, arena (the minimum-jerk mouse path). Never perception, recordings or
play.
"""
