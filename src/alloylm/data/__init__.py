"""Records, sources, the one chat-template function, mixing and packing."""
