"""A user's own project: a tiny residual MLP built with MID-L layers and its data loader."""
