"""Everything that runs beside a game, as subpackages named by their job.

    errors.py, profile.py  the two contracts every subpackage reads (named errors; the game profile)
    perception/            frame -> Observation: capture, detector, tracker, HUD reader, cues, state encoder
    recordings/            episodes on disk: the format, video, labels, recording play, stored perception
    policy/                a policy bundle on disk and the runner that turns Observations into decisions
    control/               the input driver: humanised mouse and keys, confined to the game, with a kill
    switch
    games/                 one YAML profile per game and, for games we drive, an adapter
    play/                  live runs, evaluation, demos, DAgger, the overlay
    cli.py                 `pilot`: the one place that reaches every subpackage, lazily

Imports flow down this list (tests/test_layout.py holds it).
"""
