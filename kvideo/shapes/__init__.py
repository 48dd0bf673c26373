"""Synthetic captioned videos of moving shapes: the grammar, the renderer, the scorer and the shapes recipe."""
