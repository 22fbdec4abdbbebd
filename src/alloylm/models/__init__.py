"""Model sources (embedded, tiny, local folder, .gguf, hub id), loading and saving."""
