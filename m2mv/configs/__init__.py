"""Training configs shipped with m2mv: the stage YAMLs (paper, demo, tiny) and the Accelerate configs."""
