"""Rep3D networks."""
