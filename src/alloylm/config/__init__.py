"""Pipeline configuration: YAML with line numbers, variables, dotted overrides, strict models."""
