"""Simulation mode: replay recorded telemetry and score policies on a simulated Triton.

Everything here drives the live pipeline unchanged (`Autoscaler.tick`): the
simulator is a collector and an actuator, never a second copy of the policy.
"""
