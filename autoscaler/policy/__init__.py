"""The scaling policy: a pure function of context and state → decisions and new state.

The live daemon, `replay` and the simulator all call `autoscaler.policy.decide`;
there is no second copy of the decision logic anywhere.
"""
