"""Everything about the composed Hydra config: resolvers, validation, override checks."""
