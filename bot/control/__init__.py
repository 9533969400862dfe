"""Control: the only code that sends input to the operating system (pynput), humanised, confined to the game
region, with start/pause/kill hotkeys. driver: InputDriver; humanize: paths and timing; backend: pynput or a
recorder; hotkeys; lockstep: the driver ticked in game time for `pilot eval`.

May import: bot.errors, bot.profile, validation, arena (the minimum-jerk mouse path). Never perception,
recordings or play.
"""
