"""Operating tools: stack outputs to env, tunnels, smoke test, local twin, ephemeral stacks."""
