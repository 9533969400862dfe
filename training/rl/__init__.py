"""Reinforcement fine-tuning of a policy bundle in the Arena (`pilot train rl`): PPO through the Executor's
Mamba state, a decaying KL penalty to the cloned policy, the game's score as reward.

    config.py  RLConfig, NoiseConfig      env.py     the game interface and the Arena behind it
    noise.py   perception-noise model     policy.py  ActorCritic: action distribution, value head
    rollout.py episodes played and kept   ppo.py     GAE and the PPO update
    state.py   checkpoint, resume, bundle run.py     the loop and `main(argv)`

Decisions: docs/notes/training.md, "training/rl/".
"""
