"""Offline training pipelines behind ``aiops train`` (the PPO agent: :mod:`aiops.train.ppo`).

This package module imports nothing on purpose: ``aiops --help`` loads
:mod:`aiops.train.cli`, which must not pull in torch or stable-baselines3.
"""
