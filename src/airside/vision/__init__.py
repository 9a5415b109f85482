"""Model backends behind small Protocols: detect, align, embed, assess quality."""
