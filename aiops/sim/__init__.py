"""The embedded simulator: workloads, the LLM-serving cluster model, the gym environment."""
